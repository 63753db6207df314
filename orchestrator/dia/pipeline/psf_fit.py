"""The effective PSF's oversampled grid fitted to star stamps by linear least squares.

Split from :mod:`orchestrator.dia.pipeline.psf_stars` (which finds the stars and iterates).
With the stars' positions, fluxes and local skies fixed, every pixel of every star stamp is a
linear function of the grid: the grid interpolated at that pixel's offset from the star. So
the grid that fits all stamps best (inverse-variance weighted) is one sparse linear solve,
the model half of Anderson & King's (2000, PASP 112, 1360) ePSF iteration done exactly
instead of by averaging residuals into the nearest fine bin and smoothing them. The average
and smoothing kept the smooth starting model's missing fine structure (an undersampled core is
all fine structure: R062's effective PSF peaks at 0.43 of the flux in one pixel), which left
the estimated PSF 5-10 % off in flux at some sub-pixel phases on issue 9's scenes.

Interpolation is a Lanczos kernel (``LANCZOS_A`` lobes) on the fine grid: linear in the grid,
local (36 grid samples per pixel), and within 0.1 % in PSF-fit flux of the band-limited (Fourier)
rendering that :meth:`PsfModel.stamp` uses for a 4x grid of a Roman R062 PSF.

Status (issue 9): experimental, ``PipelineConfig.psf_estimator = "lsq"``, not the default. On
single images of issue 9's scenes, with each star's position refitted as the pipeline does
above S/N 20, it reproduces the PSF files within ~0.5 % in flux; in the pipeline (seed 0, before
the wings were smoothed) the kernel sums came out 0.44-0.68 and null epochs +9 sigma: a noisy
model's wings are clipped at 0 by ``PsfModel.stamp`` with a Jacobian (the template's PSF,
+9 % in its sum) and enter the cross-convolution. It costs 10-15 s per image on one core.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import splu

from orchestrator.dia.pipeline.psf import PsfModel

if TYPE_CHECKING:
    from orchestrator.dia.pipeline.psf_stars import Star

LANCZOS_A = 3
SMOOTHNESS = 1e-5  # weight of the second-difference penalty in the core, relative to the data
WING_SMOOTHNESS = 1e2  # the same beyond WING_START_PX (log-ramped from CORE_PX)
CORE_PX, WING_START_PX = 3.0, 6.0
EDGE_PX = 1.0  # without encircled energies, the grid is held at 0 this far inside the stamp
CONSTRAINT_WEIGHT = 1e4  # of a square_sums constraint, relative to the data (solve_grid)


def lanczos_weights(t: float, a: int = LANCZOS_A) -> np.ndarray:
    """The ``2 a`` weights of fine samples ``floor(u) - a + 1 .. floor(u) + a`` at ``u``, ``t =
    u - floor(u)``; normalised to sum 1 (a constant is reproduced exactly)."""
    x = np.arange(-a + 1, a + 1, dtype=np.float64) - t
    w = np.sinc(x) * np.sinc(x / a)
    return np.asarray(w / w.sum())


def _taps(n: int, oversamp: int, half: int, d: float, a: int) -> tuple[np.ndarray, np.ndarray]:
    """Fine-grid indices (pixels x taps) and weights (taps) along one axis for offset ``d``."""
    c = n // 2
    u0 = c + (-half - d) * oversamp  # fine coordinate of the stamp's first pixel
    f0 = math.floor(u0)
    w = lanczos_weights(u0 - f0, a)
    first = f0 - a + 1 + oversamp * np.arange(2 * half + 1)
    return first[:, None] + np.arange(2 * a)[None, :], w


def sample(
    grid: np.ndarray, oversamp: int, half: int, dx: float, dy: float, a: int = LANCZOS_A
) -> np.ndarray:
    """The model at whole-pixel offsets ``-half .. half`` from a source at ``(dx, dy)``.

    Unclipped (fitting needs the model's negative noise as it is); grid samples outside the
    grid count as 0.
    """
    n = grid.shape[0]
    iy, wy = _taps(n, oversamp, half, dy, a)
    ix, wx = _taps(n, oversamp, half, dx, a)
    padded = grid
    lo = -min(int(iy.min()), int(ix.min()), 0)
    hi = max(int(iy.max()), int(ix.max()), n - 1) - (n - 1)
    if lo or hi:
        padded = np.pad(grid, (lo, hi))
    rows = padded[iy + lo]  # (pixels, taps, n + pads)
    along_y = np.einsum("pta,t->pa", rows, wy)  # (pixels_y, columns)
    return np.asarray(np.einsum("pqt,t->pq", along_y[:, ix + lo], wx))


def _design(
    n: int, oversamp: int, half: int, dx: float, dy: float, a: int
) -> tuple[np.ndarray, np.ndarray]:
    """Columns and values of the design rows of one star stamp (pixels, (2 a)^2 each)."""
    iy, wy = _taps(n, oversamp, half, dy, a)
    ix, wx = _taps(n, oversamp, half, dx, a)
    cols = iy[:, None, :, None] * n + ix[None, :, None, :]  # (py, px, ty, tx)
    vals = np.broadcast_to(wy[:, None] * wx[None, :], cols.shape)
    m = (2 * half + 1) ** 2
    return cols.reshape(m, -1), vals.reshape(m, -1)


def _second_differences(n: int) -> sparse.csr_matrix:
    """Second differences along both axes of an ``n x n`` grid (a roughness penalty)."""
    d1 = sparse.diags([1.0, -2.0, 1.0], [0, 1, 2], shape=(n - 2, n))
    eye = sparse.identity(n, format="csr")
    return sparse.vstack([sparse.kron(eye, d1), sparse.kron(d1, eye)]).tocsr()


def solve_grid(
    stamps: list[np.ndarray],
    variances: list[np.ndarray],
    fits: list[tuple[float, float, float, float]],
    n: int,
    oversamp: int,
    a: int = LANCZOS_A,
    smoothness: float = SMOOTHNESS,
    square_sums: tuple[tuple[int, int, float], ...] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """The ``n x n`` grid and the stars' local skies that fit ``stamp / flux`` best.

    ``fits`` are each star's ``(dx, dy, flux, sky)`` (offset from its stamp's centre pixel;
    the sky is refitted); residuals are weighted by the inverse variance of ``stamp / flux``.
    A second-difference penalty (``smoothness`` times the mean data weight per grid sample)
    fixes what no star constrains (the grid's Nyquist mode) without rounding the core, which
    the bright stars pin down; beyond the stamps' half-width the grid is held at 0.

    Each star's local sky is an unknown of the same solve (fitted in turn with the model, it
    and a constant in the model's wings traded places without end). A constant added to the
    model over the stamp, or to one sub-pixel phase's lattice of it, is then not measured by
    the stars (a star at any phase sees it as a constant over its stamp, which its sky takes
    up), nor is the model's scale (the stars' fluxes take it up). ``square_sums`` fixes both:
    ``(inner, outer, value)`` asks the model's flux between the squares of half-widths
    ``inner`` and ``outer`` pixels (``inner`` -1: the whole square), averaged over sub-pixel
    phases as :meth:`PsfModel.enclosed` does, to be ``value`` (an instrument's encircled
    energy); every constraint but the first holds for each phase's lattice on its own.
    Without them the stamps' outermost ``EDGE_PX`` ring is held at 0 instead (the caller
    then normalises the scale).

    The skies and constraints are a low-rank update of the grid's sparse normal matrix:
    eliminated by the Woodbury identity around one sparse LU factorisation (a direct sparse
    solve of the whole system filled in to 25 s per iteration, this takes under a second).
    """
    half = stamps[0].shape[0] // 2
    ngrid = n * n
    rows, cols, vals, rhs, wts, owner = [], [], [], [], [], []
    start = 0
    for k, (st, var, (dx, dy, f, _)) in enumerate(zip(stamps, variances, fits, strict=True)):
        c, v = _design(n, oversamp, half, dx, dy, a)
        m = c.shape[0]
        rows.append(np.repeat(np.arange(start, start + m), c.shape[1]))
        cols.append(c.ravel())
        vals.append(v.ravel())
        rhs.append((st / f).ravel())
        wts.append((f * f / var).ravel())
        owner.append(np.full(m, k))
        start += m
    col = np.concatenate(cols)
    keep = (col >= 0) & (col < ngrid)
    design = sparse.csr_matrix(
        (np.concatenate(vals)[keep], (np.concatenate(rows)[keep], col[keep])),
        shape=(start, ngrid),
    )
    w = np.concatenate(wts)
    b = np.concatenate(rhs)
    star = sparse.csr_matrix(
        (np.ones(start), (np.arange(start), np.concatenate(owner))), shape=(start, len(stamps))
    )
    weighted = sparse.diags(w) @ design
    normal = (design.T @ weighted).tocsc()
    scale = float(normal.diagonal().mean())
    edge = 0.0 if square_sums else EDGE_PX
    fine = np.abs(np.arange(n) - n // 2) > (half - edge) * oversamp
    outside = (fine[:, None] | fine[None, :]).ravel()
    rough = _second_differences(n)
    # the wings are measured by few photons per star: smooth them much more than the core
    # (~1 px beyond WING_START_PX), or their noise enters every stamp rendered from the grid
    radius = np.hypot(*np.mgrid[:n, :n] - n // 2).ravel() / oversamp
    ramp = np.clip((radius - CORE_PX) / (WING_START_PX - CORE_PX), 0.0, 1.0)
    per_sample = smoothness * (WING_SMOOTHNESS / smoothness) ** ramp
    rows_weight = np.asarray(abs(rough) @ per_sample) / 4.0
    normal = normal + scale * (rough.T @ sparse.diags(rows_weight) @ rough)
    normal = normal + sparse.diags(np.where(outside, 1.0, 1e-9) * scale)
    rhs_grid = design.T @ (w * b)
    # skies: eliminated exactly (grid block minus S D^-1 S^T)
    couple = np.asarray((weighted.T @ star).todense())  # (grid, stars)
    d_sky = np.asarray(star.T @ w).ravel()
    r_sky = np.asarray(star.T @ (w * b)).ravel()
    u_cols = [couple]
    e_diag = [-1.0 / d_sky]
    rhs_grid = rhs_grid - couple @ (r_sky / d_sky)
    for inner, outer, value in square_sums:
        ring = _square_ring(n, oversamp, inner, outer)
        for lattice in _lattices(n, oversamp):
            row = ring * lattice.ravel() * oversamp**2
            weight = CONSTRAINT_WEIGHT * scale / float(row @ row)
            u_cols.append(row[:, None])
            e_diag.append(np.array([weight]))
            rhs_grid = rhs_grid + weight * value * row
    u = np.concatenate(u_cols, 1)
    e = np.concatenate(e_diag)
    lu = splu(normal.tocsc())
    g0 = lu.solve(rhs_grid)
    gu = lu.solve(u)
    small = np.diag(1.0 / e) + u.T @ gu
    grid = g0 - gu @ np.linalg.solve(small, u.T @ g0)
    skies = (r_sky - couple.T @ grid) / d_sky * np.array([f for _, _, f, _ in fits])
    return grid.reshape(n, n), skies


def _lattices(n: int, oversamp: int) -> list[np.ndarray]:
    out = []
    for i in range(oversamp):
        for j in range(oversamp):
            lattice = np.zeros((n, n))
            lattice[i::oversamp, j::oversamp] = 1.0
            out.append(lattice)
    return out


def _square_ring(n: int, oversamp: int, inner: int, outer: int) -> np.ndarray:
    """Weights ``r`` with ``r @ grid.ravel()`` the phase-averaged flux between two squares.

    Each phase's square is centred on the pixel nearest to the source: fine sample ``c + j``
    is pixel ``(j + (o - 1) // 2) // o`` of it (``j = i + k o``: the source sits ``-i / o``
    from pixel ``k``'s centre, or ``1 - i / o`` from pixel ``k + 1``'s).
    """
    o = oversamp
    pixel = (np.arange(n) - n // 2 + (o - 1) // 2) // o

    def square(h: int) -> np.ndarray:
        one = np.abs(pixel) <= h
        return np.asarray(one[:, None] & one[None, :])

    return (square(outer) & ~square(inner)).ravel().astype(np.float64) / o**2


def fit_epsf(
    image: np.ndarray,
    variance: np.ndarray,
    stars: list[Star],
    start: PsfModel,
    half: int,
    table: Mapping[int, float] | None,
    iterations: int = 4,
) -> tuple[np.ndarray, str]:
    """The effective PSF's grid fitted to ``stars`` (Anderson & King's loop, model by
    :func:`solve_grid`), and how its scale was set ("" when ``table`` lacks the radii).

    Each iteration fits every star's position, flux and local sky with the current model,
    then solves for the grid and the skies, and re-centres the grid on its core's centroid
    (by a phase ramp: exact for a band-limited grid). With the band's encircled energies
    ``table`` the core's and the outer ring's flux are held to the instrument's (see
    :func:`solve_grid`); without, the grid sums to 1 and the caller scales it.
    """
    from orchestrator.dia.pipeline.psf_stars import CORE_HALF_PX, _fit_star, _mask_neighbours

    o = start.oversamp
    n = 2 * (half * o + o // 2 + LANCZOS_A) + 1
    centres = [(round(s.x), round(s.y)) for s in stars]
    boxes = [
        (slice(iy - half, iy + half + 1), slice(ix - half, ix + half + 1)) for ix, iy in centres
    ]
    stamps = [image[b] for b in boxes]
    variances = [
        _mask_neighbours(np.maximum(variance[b], 1e-30), s, b)
        for s, b in zip(stars, boxes, strict=True)
    ]
    ee = table or {}
    inner = max(CORE_HALF_PX + 1, half - 3)
    sums: tuple[tuple[int, int, float], ...] = ()
    how = ""
    if all(h in ee for h in (CORE_HALF_PX, inner, half)) and inner < half:
        sums = ((-1, CORE_HALF_PX, ee[CORE_HALF_PX]), (inner, half, ee[half] - ee[inner]))
        how = (
            f"the instrument's encircled energy in the central {2 * CORE_HALF_PX + 1}^2 pixels "
            f"and between {2 * inner + 1}^2 and {2 * half + 1}^2"
        )
    model = start
    fits = [(s.x, s.y, s.flux, 0.0) for s in stars]
    grid = start.grid
    for _ in range(iterations):
        fits = [
            _fit_star(model, st, var, x, y, f, half, b, centre=c, steps=4)
            for st, var, (x, y, f, b), c in zip(stamps, variances, fits, centres, strict=True)
        ]
        offsets = [
            (x - c[0], y - c[1], f, b) for (x, y, f, b), c in zip(fits, centres, strict=True)
        ]
        grid, skies = solve_grid(stamps, variances, offsets, n, o, square_sums=sums)
        fits = [(x, y, f, b) for (x, y, f, _), b in zip(fits, skies, strict=True)]
        grid = recentre(grid, o)
        if not sums:
            grid = grid * (o * o / grid.sum())
        model = PsfModel(grid, o)
    return grid, how


def recentre(grid: np.ndarray, oversamp: int) -> np.ndarray:
    """``grid`` shifted so that its central ``+-2`` pixels' centroid is at its centre sample.

    A phase ramp shifts a band-limited grid exactly (a cubic spline misses the core by ~1 %).
    """
    c = grid.shape[0] // 2
    r = 2 * oversamp
    core = grid[c - r : c + r + 1, c - r : c + r + 1]
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    tot = core.sum()
    if tot <= 0:
        return grid
    sy, sx = float((core * yy).sum() / tot), float((core * xx).sum() / tot)
    pad = 2 * oversamp
    big = np.pad(grid, pad)
    fy = np.fft.fftfreq(big.shape[0])[:, None]
    fx = np.fft.rfftfreq(big.shape[1])[None, :]
    ramp = np.exp(2j * np.pi * (fy * sy + fx * sx))
    shifted = np.fft.irfft2(np.fft.rfft2(big) * ramp, s=big.shape)
    return np.asarray(shifted[pad:-pad, pad:-pad])
