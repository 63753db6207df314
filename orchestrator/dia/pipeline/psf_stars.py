"""Effective PSFs estimated from the stars of one image, put on the unit-total-flux scale.

Split from :mod:`orchestrator.dia.pipeline.psf` (the model); the stars are found in
:mod:`.stars`; see :func:`estimate_psf`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from orchestrator.dia.errors import DiaError
from orchestrator.dia.pipeline.psf import PsfModel
from orchestrator.dia.pipeline.stars import Star, find_stars, mask_neighbours

CORE_HALF_PX = 4  # the core whose encircled energy scales an estimated PSF (estimate_psf)
WING_SMOOTH_PX = 1.2  # smoothing of the model's corrections beyond 6 px (estimate_psf)
# smoothing of the corrections in the core, then in the last two iterations (pixels, Gaussian
# sigma). Less smoothing leaves less bias over sub-pixel phases (the smoothing damps what makes an
# undersampled PSF's phases differ, and 12 iterations never undo it) but lets in the stars'
# noise; the halves' error (measure.psf_error) sees the noise, not the bias. On issue 9's 512^2
# Roman scenes (seeds 0-4, pooled scale / pull std / bright-epoch error, the model then the mean
# of the halves): 0.4 / 0.2 gave 0.998 / 1.24 / -0.09 %, 0.2 / 0.12 gave 1.010 / 0.96 / +0.81 %,
# 0.3 / 0.15 gave 1.002 / 1.08 / +0.01 % (with the model from all stars: 0.9985 / 1.05 / -0.28 %)
SMOOTH_PX = 0.3
SMOOTH_LAST_PX = 0.15
# wider star stamps (half-widths, widest first) when the region still has this many isolated
# stars at that width: each star's local sky is then measured farther out and absorbs less of
# the wings. On issue 9's 4088^2 scenes (1024^2 regions: ~125 stars at 14, 350 at 10) the model's
# flux went from 0.990 to 0.994 of the truth; on 512^2 ones (~30 stars at 14) 14 was far worse
# (1.013, 2.7 % scatter over phases), and there the rule keeps the caller's width
WIDE_HALVES = (14, 12)
WIDE_MIN_STARS = 100


class PsfEstimationError(DiaError):
    """Too few usable stars to estimate a PSF from an image."""


def estimate_psf(
    image: np.ndarray,
    variance: np.ndarray,
    mask: np.ndarray,
    *,
    half: int = 8,
    oversamp: int = 4,
    min_stars: int = 5,
    iterations: int = 12,
    encircled_energy: float | None = None,
) -> PsfModel:
    """An oversampled effective PSF from the bright isolated stars of one image.

    One undersampled star samples the PSF at one sub-pixel phase only; many stars at random
    phases fill the oversampled grid (Anderson & King 2000). Each iteration fits every star's
    flux and position with the current model, then adds the smoothed mean residual to the model
    (smoothing the *correction*, not the model, so the converged model is not broadened),
    re-centres it and normalises it. Three details keep the flux scale unbiased (each was worth
    several per cent on the simulated data set, where the old iteration gave a model ~9 % too
    low at the peak and fluxes ~6 % too high):

    - residuals are averaged with inverse-variance weights ``f^2 / var`` (the faintest stars'
      stamps are almost pure noise at the model's scale; an unweighted mean filled the wings
      with their noise);
    - the model is neither clipped at zero nor sampled with clipping while it is fitted: a
      clip turns zero-mean noise in the wings into a positive pedestal that grows with every
      iteration and, after normalisation, steals flux from the core (and a clipped rendering
      hides negative wings from the residual, so they drift instead);
    - every sub-pixel phase's lattice of the model sums to 1, as an effective PSF must (the
      flux of a star does not depend on where it falls in its pixel); normalising one phase
      only left the others free to trade scale with the stars' fitted fluxes.

    The correction is smoothed by :data:`SMOOTH_PX` (:data:`SMOOTH_LAST_PX` in the last two
    iterations): more washes out the phase dependence of an undersampled effective PSF (fluxes
    then depend on the sub-pixel position by +-2-3 %), less lets the stars' noise in. Each
    star's fit has its own local sky (see :func:`_fit_star`), and fainter neighbours in a stamp
    have their cores masked.

    With at least ``2 min_stars`` stars, two more models are built from alternate stars
    (brightest first) and kept in ``PsfModel.halves``: they differ by what the stars' noise
    leaves in the model, which the photometry turns into the flux error the PSF adds
    (:func:`orchestrator.dia.pipeline.measure.psf_error`). The model itself is the one from all
    the stars: the mean of the halves was as good on 512^2 scenes (~70 stars) but 1.5 % higher
    in flux on 320^2 ones (~35 stars: each half leaves sub-pixel phases unvisited). The three
    models take 3.3 s on a 512^2 Roman image (one took 7.8 s before :func:`_sample_at`).

    Where the image has stars to spare (:data:`WIDE_MIN_STARS` at a width of
    :data:`WIDE_HALVES`), the stars' stamps are that much wider than ``half``.

    The model is then scaled to the flux fraction its ``2 half + 1`` stamp holds:
    ``encircled_energy`` when given (the instrument's table, :mod:`.roman_ee`), else measured
    by :func:`stamp_encircled_energy` (a few per cent uncertain in a crowded field).
    """
    for wide in (*(h for h in WIDE_HALVES if h > half), half):
        stars = find_stars(
            image,
            variance,
            mask,
            half=wide,
            isolation_px=wide * math.sqrt(2),
            max_neighbour_ratio=0.1,
        )
        if len(stars) >= WIDE_MIN_STARS:
            break
    half = wide
    if len(stars) < min_stars:
        raise PsfEstimationError(
            f"found {len(stars)} bright isolated stars, need at least {min_stars} "
            "to estimate the PSF (give --psf FILE or gaussian:FWHM, or a psf column)"
        )
    fwhm0 = _moment_fwhm(image, stars, half)
    halves: tuple[PsfModel, PsfModel] | None = None
    model = _iterate(image, variance, stars, half, oversamp, iterations, fwhm0)
    if encircled_energy is not None:
        # pin the core: its model is measured by every star's brightest pixels, while the
        # wings collect faint neighbours and the background map's errors (a pedestal that,
        # normalised in, moved fluxes by 3-8 % on issue 9's scenes)
        enclosed = float(encircled_energy) / model.enclosed(CORE_HALF_PX)
        how = f"the instrument's encircled energy in the central {2 * CORE_HALF_PX + 1}^2 pixels"
    else:
        enclosed = stamp_encircled_energy(image, variance, mask, model, half)
        how = "the curve of growth of isolated stars" if enclosed < 1 else "nothing (no star)"
    note = (
        f"PSF estimated from {len(stars)} stars; its {2 * half + 1}^2 stamp holds "
        f"{enclosed:.4f} of the flux, from {how}"
    )
    if len(stars) >= 2 * min_stars:
        # brightest first: alternate stars make two halves of the same brightness mix, each put
        # on the model's core scale: their difference is then the whole model error
        core = enclosed * model.enclosed(CORE_HALF_PX)
        one, two = (
            _iterate(image, variance, stars[k::2], half, oversamp, iterations, fwhm0)
            for k in (0, 1)
        )
        halves = (
            PsfModel(one.grid * core / one.enclosed(CORE_HALF_PX), oversamp, origin_known=False),
            PsfModel(two.grid * core / two.enclosed(CORE_HALF_PX), oversamp, origin_known=False),
        )
    return PsfModel(model.grid * enclosed, oversamp, note, origin_known=False, halves=halves)


def _iterate(
    image: np.ndarray,
    variance: np.ndarray,
    stars: list[Star],
    half: int,
    oversamp: int,
    iterations: int,
    fwhm0: float,
) -> PsfModel:
    """The effective PSF of ``stars`` (see :func:`estimate_psf`), normalised per phase."""
    # start from a Gaussian with the stars' mean second moment
    model = PsfModel.gaussian(fwhm0, oversamp, half + 2)
    n = model.grid.shape[0]
    c = n // 2
    off = np.arange(-half, half + 1, dtype=np.float64)
    radius = np.hypot(*np.mgrid[-c : c + 1, -c : c + 1]) / oversamp
    blend = np.clip((radius - 3.0) / 3.0, 0.0, 1.0)
    boxes = [
        (
            slice(round(s.y) - half, round(s.y) + half + 1),
            slice(round(s.x) - half, round(s.x) + half + 1),
        )
        for s in stars
    ]
    stamps = [image[b] for b in boxes]
    variances = [
        mask_neighbours(np.maximum(variance[b], 1e-30), s, b)
        for s, b in zip(stars, boxes, strict=True)
    ]
    positions = [(s.x, s.y, s.flux, 0.0) for s in stars]
    centres = [(round(s.x), round(s.y)) for s in stars]  # of the stamps, fixed
    for it in range(iterations):
        positions = [
            _fit_star(model, st, var, x, y, f, half, b, centre=cxy)
            for st, var, (x, y, f, b), cxy in zip(
                stamps, variances, positions, centres, strict=True
            )
        ]
        acc = np.zeros((n, n))
        wsum = np.zeros((n, n))
        for st, var, (x, y, f, b), (cx, cy) in zip(
            stamps, variances, positions, centres, strict=True
        ):
            dx, dy = x - cx, y - cy
            resid = (st - b) / f - _sample_at(model, half, [(dx, dy)])[0]
            weight = f * f / var  # inverse variance of st / f
            fy = np.rint(c + (off[:, None] - dy) * oversamp).astype(int)
            fx = np.rint(c + (off[None, :] - dx) * oversamp).astype(int)
            fy, fx = np.broadcast_arrays(fy, fx)
            ok = (fy >= 0) & (fy < n) & (fx >= 0) & (fx < n)
            np.add.at(acc, (fy[ok], fx[ok]), (weight * resid)[ok])
            np.add.at(wsum, (fy[ok], fx[ok]), weight[ok])
        sm = (SMOOTH_PX if it < iterations - 2 else SMOOTH_LAST_PX) * oversamp
        corr = _smoothed_ratio(acc, wsum, sm)
        # the wings are measured by few photons per star: smooth them more (1.2 px beyond
        # 6 px, blending from 3 px), or their noise, normalised into the core, moves it
        corr_wide = _smoothed_ratio(acc, wsum, WING_SMOOTH_PX * oversamp)
        corr = corr + blend * (corr_wide - corr)
        grid = _recentre(model.grid + corr, oversamp)
        model = PsfModel(_normalise_phases(grid, oversamp), oversamp)
    return model


def stamp_encircled_energy(
    image: np.ndarray,
    variance: np.ndarray,
    mask: np.ndarray,
    model: PsfModel,
    half: int,
    min_stars: int = 3,
) -> float:
    """The fraction of a star's total flux that the ``2 half + 1`` model stamp holds.

    The model is normalised inside its stamp; Roman's diffraction wings carry 2-3 % of the
    flux beyond 10 pixels (R062: 97.4 % within 21 x 21, 98.5 % within 41 x 41, 99.4 % within
    97 x 97). The curve of growth of each bright star with no other source within ``2 half +
    3`` is fitted, over apertures of radius 6 to ``2 half``, as
    ``S(r) = F - G / r + b pi r^2``: beyond the core a diffraction PSF's encircled energy
    approaches 1 as ``1 - A / r`` (wings falling as ``r^-3``), and ``b`` is the local error of
    the background map (in a crowded field a box median sits a few counts off around bright
    stars; unfitted, it bent the curve of growth down by 10-30 % at 20 px). ``F`` over the
    star's flux fitted with the model is the correction; the median over the stars is used
    (a faint neighbour or a cosmic ray spoils one star, not the median). With fewer than
    ``min_stars`` such stars the stamp is taken to hold everything (1: fluxes then come out
    low by the missing wings, and the row says so).
    """
    r2 = 2 * half
    stars = find_stars(
        image, variance, mask, half=r2 + 1, min_snr=50.0, isolation_px=r2 + 3, max_stars=60
    )
    radii = np.arange(6.0, r2 + 0.5, 1.0)
    design = np.stack([np.ones_like(radii), -1.0 / radii, np.pi * radii**2], 1)
    ratios = []
    for st in stars:
        iy, ix = round(st.y), round(st.x)
        box = (slice(iy - half, iy + half + 1), slice(ix - half, ix + half + 1))
        _, _, fit_flux, _ = _fit_star(
            model, image[box], np.maximum(variance[box], 1e-30), st.x, st.y, st.flux, half
        )
        if not fit_flux > 0:
            continue
        big = r2 + 1
        cut = image[iy - big : iy + big + 1, ix - big : ix + big + 1]
        yy, xx = np.mgrid[-big : big + 1, -big : big + 1]
        rr = np.hypot(xx - (st.x - ix), yy - (st.y - iy))
        sums = np.array([float(cut[rr <= r].sum()) for r in radii])
        coef, *_ = np.linalg.lstsq(design, sums, rcond=None)
        ratios.append(float(coef[0]) / fit_flux)
    if len(ratios) < min_stars:
        return 1.0
    return float(np.clip(1.0 / np.median(ratios), 0.8, 1.0))


def _smoothed_ratio(acc: np.ndarray, wsum: np.ndarray, sigma: float) -> np.ndarray:
    """The weighted mean residual, both sums smoothed by a Gaussian of ``sigma`` fine bins."""
    num = ndimage.gaussian_filter(acc, sigma, mode="constant")
    den = ndimage.gaussian_filter(wsum, sigma, mode="constant")
    covered = den > 1e-6 * den.max()
    return np.where(covered, num / np.where(covered, den, 1.0), 0.0)


def _sample_at(model: PsfModel, half: int, offsets: list[tuple[float, float]]) -> np.ndarray:
    """The model at whole-pixel offsets from each ``(dx, dy)``, without clipping (for fitting),
    all in one interpolation: the spline's prefilter of the whole grid, which every call
    recomputes, was half of the estimate's time when the position gradients were sampled one
    call each."""
    off = np.arange(-half, half + 1, dtype=np.float64)
    c = model.grid.shape[0] // 2
    side = 2 * half + 1
    uy = np.empty((len(offsets), side, side))
    ux = np.empty((len(offsets), side, side))
    for k, (dx, dy) in enumerate(offsets):
        ux[k] = off[None, :] - dx
        uy[k] = off[:, None] - dy
    coords = np.stack([c + uy * model.oversamp, c + ux * model.oversamp])
    return np.asarray(ndimage.map_coordinates(model.grid, coords, order=3, mode="constant"))


def _normalise_phases(grid: np.ndarray, oversamp: int) -> np.ndarray:
    """``grid`` scaled so that the samples of every sub-pixel phase sum to 1 (flux conservation)."""
    out = grid.copy()
    for i in range(oversamp):
        for j in range(oversamp):
            out[i::oversamp, j::oversamp] /= out[i::oversamp, j::oversamp].sum()
    return out


def _recentre(grid: np.ndarray, oversamp: int) -> np.ndarray:
    c = grid.shape[0] // 2
    r = 2 * oversamp
    core = grid[c - r : c + r + 1, c - r : c + r + 1]
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    tot = core.sum()
    if tot <= 0:
        return grid
    sy, sx = float((core * yy).sum() / tot), float((core * xx).sum() / tot)
    return np.asarray(ndimage.shift(grid, (-sy, -sx), order=3, mode="constant"))


def _moment_fwhm(image: np.ndarray, stars: list[Star], half: int) -> float:
    vals = []
    r = min(half, 4)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    for s in stars[:30]:
        iy, ix = round(s.y), round(s.x)
        st = np.clip(image[iy - r : iy + r + 1, ix - r : ix + r + 1], 0, None)
        tot = st.sum()
        if tot <= 0:
            continue
        var = float((st * ((xx - (s.x - ix)) ** 2 + (yy - (s.y - iy)) ** 2)).sum() / tot) / 2
        vals.append(var)
    # subtract the pixel's own variance (1/12) to get the optical PSF's
    sig2 = max(float(np.median(vals)) - 1 / 12, 0.1) if vals else 1.0
    return 2.3548 * math.sqrt(sig2)


def _fit_star(
    model: PsfModel,
    stamp: np.ndarray,
    variance: np.ndarray,
    x: float,
    y: float,
    flux: float,
    half: int,
    sky: float = 0.0,
    centre: tuple[int, int] | None = None,
) -> tuple[float, float, float, float]:
    """Flux, position and local sky of one star by weighted Gauss-Newton (three steps).

    ``stamp`` is cut around the pixel ``centre`` (x, y; default the nearest to ``(x, y)``): a
    refined position is always measured from the stamp's own centre, also once it has moved
    past a half pixel (taking ``round`` of it then misregistered the stamp by a pixel).

    The local sky (a constant over the stamp) takes up what the image's background map got
    wrong there: in a crowded field the map sits a few counts off around bright stars (their
    wings and their neighbours' raise a box median), and a model fitted without it grows
    negative or positive wings and a core several per cent off.
    """
    ix, iy = (round(x), round(y)) if centre is None else centre
    dx, dy = x - ix, y - iy
    eps = 1e-3
    w = 1.0 / np.sqrt(variance.ravel())
    ones = np.ones(stamp.size)
    for _ in range(3):
        p, xp, xm, yp, ym = _sample_at(
            model, half, [(dx, dy), (dx + eps, dy), (dx - eps, dy), (dx, dy + eps), (dx, dy - eps)]
        )
        gx = (xp - xm) / (2 * eps)
        gy = (yp - ym) / (2 * eps)
        a = np.stack([p.ravel(), flux * gx.ravel(), flux * gy.ravel(), ones], 1)
        r = (stamp - flux * p - sky).ravel()
        try:
            step, *_ = np.linalg.lstsq(a * w[:, None], r * w, rcond=None)
        except np.linalg.LinAlgError:
            break
        flux += float(step[0])
        dx = float(np.clip(dx + step[1], -0.75, 0.75))
        dy = float(np.clip(dy + step[2], -0.75, 0.75))
        sky += float(step[3])
        if flux <= 0:
            flux = float(stamp.sum())
    return ix + dx, iy + dy, flux, sky
