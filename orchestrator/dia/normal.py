"""The normal equations of the subtraction kernel's fit, built exactly (both backends).

The objective is exact weighted least squares over the fit pixels:

    minimise  sum_x Omega(x) [S(x) - sum_{k,t} c[k,t] p_t(x) T0(x - k) - sum_b d_b q_b(x)]^2

with ``Omega`` in [0, 1] (0 off the fit pixels) and ``T0`` the template, zero outside the image
(no wrap-around) and at bad pixels. The normal matrix is formed exactly and solved by Cholesky;
it is only ``n_unknowns`` square (2,166 for w = 9, DK = 2), so the solve is cheap and the work is
in forming the kernel-kernel block ``sum_x Omega p_t p_s T0(x - k) T0(x - l)``. It is split by
the shape of ``Omega``: zero on a frame of rows and columns along the image edges (widths taken
from ``Omega`` itself), one or less inside the rectangle ``R`` the frame leaves.

1. The whole plane (``Omega = 1`` everywhere): shift invariant, so it follows from the lag
   correlations ``L_m(d) = sum_u u^m T0(u) T0(u + d)`` for ``|m| <= 2 DK`` and ``|d| <= 2w``
   (the polynomial weights are moved onto the lag with the binomial theorem). Only the low
   moments ``x^a y^b T0`` (``a + b <= DK``, needed for the model anyway) are transformed: a high
   ``L_m`` with ``m = a + b`` is the correlation of the low moments ``a`` and ``b`` minus lower
   ``L``s (:func:`high_lag_moments`), so 2 DK = 4 costs 6 FFTs, not 15.
2. Minus the frame, by inclusion and exclusion: minus the top and bottom strips of whole rows,
   minus the left and right strips of whole columns, plus the four corners counted twice.
   Along a strip's lines the sum is again shift invariant: for each pair of template lines
   within ``2w`` of the strip, their 1-D lag correlations with moments along the line (one
   matrix product per lag), summed over the strip's lines with the across-line power. That is
   ``O(n (m + 2w)^2 (4w + 1) (2 DK + 1))`` work instead of one outer product per frame pixel.
   The corners (``(m + w)^2`` pixels each) are outer products of their design rows.
3. Minus ``sum_{x in E} (1 - Omega(x)) a(x) a(x)^T`` over the pixels ``E`` of ``R`` with
   ``Omega < 1`` (bad-pixel footprints, ``fit_exclude``, down-weighted pixels): design rows in
   chunks, one BLAS ``dsyrk`` each (``2 |E| n^2`` flops, about 0.04 s per 1,000 rows at
   n = 2,166 on two cores).

The other blocks (kernel-background, right-hand side) hold one template factor only; they are
lag correlations of the low moments ``x^a y^b T0`` (``a + b <= DK``) with ``Omega S`` and
``Omega q_b``, exact with ``Omega`` applied. The spectra of those low moments are kept for the
model image (``sum_t p_t (T0 conv K_t)`` is ``sum_ab (x^a y^b T0) conv K'_ab``, one inverse FFT).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from orchestrator.dia import basis
from orchestrator.dia.backend import ComputeBackend
from orchestrator.dia.errors import DiaFitError
from orchestrator.dia.rows import ExcludedRows, footprint_energy, rank_update

# Of the pixels of Omega < 1, this many (the brightest footprints) are added to the normal
# matrix one by one (0.2 s per 4,096 on two cores), the rest is left to the solve (conjugate
# gradients, ~|E| n work per step against |E| n^2 to form them).
DIRECT_ROWS_MAX = 4096


@dataclass
class FitProblem:
    """The exact normal equations of one fit (plain delta basis) and what the model reuses."""

    layout: basis.Layout
    normal: np.ndarray  # plain basis, (n_plain, n_plain); less `excluded` when that is set
    rhs: np.ndarray  # plain basis
    n_e: int  # design rows treated one by one (corners + pixels of R with Omega < 1)
    fft_shape: tuple[int, int]
    model_spectra: list[Any]  # backend spectra of x^a y^b T0, a + b <= DK, kernel_exps order
    timings_s: dict[str, float] = field(default_factory=dict)
    # the (1 - Omega) rows still to subtract from `normal` (many of them: see solve)
    excluded: ExcludedRows | None = None


def _moment_exponents(order: int) -> tuple[np.ndarray, np.ndarray]:
    exps = basis.monomial_exponents(order)
    index = np.full((order + 1, order + 1), -1, dtype=np.int64)
    for m, (i, j) in enumerate(exps):
        index[i, j] = m
    return exps, index


def frame_widths(omega: np.ndarray) -> tuple[int, int, int, int]:
    """Widths (top, bottom, left, right) of the all-zero rows and columns along the edges."""
    rows = np.flatnonzero(np.any(omega != 0, axis=1))
    cols = np.flatnonzero(np.any(omega != 0, axis=0))
    if rows.size == 0:
        raise DiaFitError("no pixel has a non-zero fit weight")
    n0, n1 = omega.shape
    return int(rows[0]), int(n0 - 1 - rows[-1]), int(cols[0]), int(n1 - 1 - cols[-1])


def high_lag_moments(
    low_spectra: list[Any],
    low_exps: np.ndarray,
    mom_exps: np.ndarray,
    mom_index: np.ndarray,
    alphas: tuple[float, float],
    w: int,
    backend: ComputeBackend,
) -> np.ndarray:
    """``L[m, 2w + dy, 2w + dx] = sum_u u^m T0(u) T0(u + d)`` for every ``m`` of ``mom_exps``
    from the spectra of the low moments ``u^a T0`` (``low_exps``, with ``(0, 0)``).

    With ``m = a + b`` (``a``, ``b`` low) the correlation of the two low moments is
    ``C(d) = sum_u u^a T0(u) (u + d)^b T0(u + d) = sum_{j <= b} binom(b, j) (alpha d)^(b - j)
    L_{a + j}(d)`` (scaled coordinates: ``x~(u + d) = x~(u) + alpha d``), so ``L_m`` is ``C``
    minus moments of lower degree, taken in order of degree. The corrections are small
    (``alpha d <= 4 w / (n - 1)``): no cancellation.
    """
    lag = 2 * w
    low = {(int(i), int(j)): m for m, (i, j) in enumerate(low_exps)}
    top = max(int(i) + int(j) for i, j in low_exps)
    r = np.arange(-lag, lag + 1, dtype=np.float64)
    sy, sx = (alphas[0] * r)[:, None], (alphas[1] * r)[None, :]
    out = np.empty((len(mom_exps), 2 * lag + 1, 2 * lag + 1))
    for m, (mi, mj) in enumerate(mom_exps):  # by degree: lower moments are ready
        mi, mj = int(mi), int(mj)
        ai = min(mi, top)  # a: as much of m as a low moment holds, x first; b = m - a
        aj = min(mj, top - ai)
        bi, bj = mi - ai, mj - aj
        acc = backend.lags(low_spectra[low[(ai, aj)]], low_spectra[low[(bi, bj)]], lag)
        for ji in range(bi + 1):
            for jj in range(bj + 1):
                if (ji, jj) == (bi, bj):
                    continue
                coef = _binom(bi, ji) * _binom(bj, jj) * sx ** (bi - ji) * sy ** (bj - jj)
                acc -= coef * out[mom_index[ai + ji, aj + jj]]
        out[m] = acc
    return out


def _binom(n: int, r: int) -> float:
    from math import comb

    return float(comb(n, r))


def _one_factor_block(
    lag_moments: np.ndarray,
    kexps: np.ndarray,
    mom_index: np.ndarray,
    w: int,
    alphas: tuple[float, float],
) -> np.ndarray:
    """``sum_x A(x) p_t(x) T0(x - k)`` for every ``(k, t)`` (plain order) from the lag
    correlations ``lag_moments[m, w + dy, w + dx] = sum_u u^m T0(u) A(u + d)``."""
    ay, ax = alphas
    r = np.arange(-w, w + 1, dtype=np.float64)
    sy, sx = (ay * r)[:, None], (ax * r)[None, :]
    out = np.zeros(((2 * w + 1) ** 2, len(kexps)))
    for t, (i, j) in enumerate(kexps):
        acc = np.zeros((2 * w + 1, 2 * w + 1))
        for a in range(i + 1):
            for b in range(j + 1):
                coef = _binom(i, a) * _binom(j, b) * sx ** (i - a) * sy ** (j - b)
                acc += coef * lag_moments[mom_index[a, b]]
        out[:, t] = acc.ravel()
    return out.ravel()


def _strip_block(
    template0: np.ndarray,
    lines_lo: int,
    lines_hi: int,
    strip_lines: list[np.ndarray],
    layout: basis.Layout,
    horizontal: bool,
    backend: ComputeBackend,
) -> np.ndarray:
    """Kernel-kernel block of whole-line strips (rows when ``horizontal``, else columns) over
    the x-space lines ``strip_lines`` (one array per strip), see the module docstring."""
    w = layout.half_width
    n_pow = 2 * layout.kernel_order + 1
    img = template0 if horizontal else template0.T
    n_across, n_along = img.shape
    al, bl = basis.scale(n_along)
    ac, bc = basis.scale(n_across)
    coords = al * np.arange(n_along, dtype=np.float64) + bl
    sums = np.zeros((2 * w + 1, 2 * w + 1, 4 * w + 1, n_pow, n_pow))
    for lines in strip_lines:
        if lines.size == 0:
            continue
        lo = max(0, int(lines.min()) - w)
        hi = min(n_across, int(lines.max()) + w + 1)
        if hi <= lo:
            continue
        block = np.ascontiguousarray(img[lo:hi])
        moments = backend.line_pair_moments(block, coords, 2 * w, n_pow)
        sums += backend.strip_sums(moments, lo, lines, ac * lines + bc, w, n_pow)
    return backend.assemble_strip(sums, layout.kernel_exps, al, w, horizontal)


def build_problem(
    science: np.ndarray,
    template0: np.ndarray,
    omega: np.ndarray,
    layout: basis.Layout,
    backend: ComputeBackend,
    direct_rows_max: int | None = None,
) -> FitProblem:
    """The exact plain normal matrix and right-hand side (see the module docstring).

    With more than ``direct_rows_max`` (default :data:`DIRECT_ROWS_MAX`) pixels of ``Omega < 1``
    inside the frame, their rank-one corrections are not added to ``normal`` but kept in
    ``excluded`` for :func:`solve`."""
    if direct_rows_max is None:
        direct_rows_max = DIRECT_ROWS_MAX
    clock = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - clock
        clock = now

    shape = (int(template0.shape[0]), int(template0.shape[1]))
    n0, n1 = shape
    w = layout.half_width
    kexps, bexps = layout.kernel_exps, layout.background_exps
    nk, nt, nb = layout.nk, layout.nt, layout.nb
    nkt = nk * nt
    mom_exps, mom_index = _moment_exponents(2 * layout.kernel_order)
    alphas = (basis.scale(n0)[0], basis.scale(n1)[0])
    fshape = backend.fft_shape(shape, 2 * w)

    # --- FFT pass: the low moments' spectra, the one-factor blocks, the whole-plane kk moments
    ay, by = basis.scale(n0)
    ax, bx = basis.scale(n1)
    yc = ay * np.arange(n0, dtype=np.float64) + by
    xc = ax * np.arange(n1, dtype=np.float64) + bx
    # background sums are separable: sum_x W(x) x~^i y~^j = y~^j . W . x~^i (no image-sized
    # polynomial images)
    weighted_science = omega * science
    bg_rhs = np.array([yc**j @ weighted_science @ xc**i for i, j in bexps])
    del weighted_science
    bg_normal = np.array(
        [[yc ** (j + jc) @ omega @ xc ** (i + ic) for ic, jc in bexps] for i, j in bexps]
    )
    # the six moment spectra first, then one reference spectrum at a time, formed in its padded
    # buffer (peak memory: the moments plus one reference, 135 MB each on a 4088^2 frame)
    n_low = nt  # kernel_exps = the moments of degree <= DK, in monomial_exponents order
    model_spectra: list[Any] = [None] * n_low
    for m, spec in backend.moment_spectra(template0, kexps, fshape):
        model_spectra[m] = spec
        del spec
    lap("fft_moments")
    rhs_moments = np.empty((n_low, 2 * w + 1, 2 * w + 1))
    kb_moments = np.empty((nb, n_low, 2 * w + 1, 2 * w + 1))
    ref = backend.rfft_product(omega, science, fshape)
    for m in range(n_low):
        rhs_moments[m] = backend.lags(model_spectra[m], ref, w)
    del ref
    for q, (i, j) in enumerate(bexps):
        poly = None if i == j == 0 else basis.poly_image(int(i), int(j), shape)
        ref = backend.rfft_product(omega, poly, fshape)
        del poly
        for m in range(n_low):
            kb_moments[q, m] = backend.lags(model_spectra[m], ref, w)
        del ref
    lap("fft_refs")
    kk_moments = high_lag_moments(model_spectra, kexps, mom_exps, mom_index, alphas, w, backend)
    lap("lag_moments")

    normal = np.zeros((layout.n_plain, layout.n_plain))
    normal[:nkt, :nkt] = backend.assemble_kk(kk_moments, mom_index, kexps, *alphas, w)
    lap("assemble_plane")

    # --- minus the frame: strips of whole lines, the corners added back below
    top, bottom, left, right = frame_widths(omega)
    h_lines = [np.arange(-w, top), np.arange(n0 - bottom, n0 + w)]
    v_lines = [np.arange(-w, left), np.arange(n1 - right, n1 + w)]
    normal[:nkt, :nkt] -= _strip_block(template0, 0, n0, h_lines, layout, True, backend)
    normal[:nkt, :nkt] -= _strip_block(template0, 0, n1, v_lines, layout, False, backend)
    lap("strips")

    # --- explicit design rows: corners (+1) and pixels of R with Omega < 1 (-(1 - Omega))
    corner_r, corner_c = [], []
    for ys in h_lines:
        for xs in v_lines:
            yy, xx = np.meshgrid(ys, xs, indexing="ij")
            corner_r.append(yy.ravel())
            corner_c.append(xx.ravel())
    inner = omega[top : n0 - bottom, left : n1 - right]
    er, ec = np.nonzero(inner < 1.0)
    e_w = inner[er, ec]
    excluded = None
    if len(er) > direct_rows_max:
        # the rows that weigh most in the normal matrix (bright footprints: saturated, inpainted
        # star cores) are formed; the rest is left to the solve as an operator, so that the
        # preconditioner (the matrix without them) stays close and few steps are needed
        t0c = np.ascontiguousarray(template0, dtype=np.float64)
        energy = footprint_energy(t0c, er + top, ec + left, w) * (1.0 - e_w)
        order = np.argsort(energy)[::-1]
        rest = order[direct_rows_max:]
        excluded = ExcludedRows(template0, er[rest] + top, ec[rest] + left, 1.0 - e_w[rest], layout)
        keep = np.sort(order[:direct_rows_max])
        er, ec, e_w = er[keep], ec[keep], e_w[keep]
    rows = np.concatenate([*corner_r, er + top]).astype(np.int64)
    cols = np.concatenate([*corner_c, ec + left]).astype(np.int64)
    wgt = np.concatenate([np.ones(sum(len(r) for r in corner_r)), -(1.0 - e_w)])
    pad = 2 * w
    t0p = np.pad(template0, pad)
    normal[:nkt, :nkt] += rank_update(t0p, pad, rows, cols, wgt, layout, shape)
    del t0p
    lap("design_rows")

    # --- one-factor blocks
    rhs = np.zeros(layout.n_plain)
    rhs[:nkt] = _one_factor_block(rhs_moments, kexps, mom_index, w, alphas)
    for q in range(nb):
        col = _one_factor_block(kb_moments[q], kexps, mom_index, w, alphas)
        normal[:nkt, nkt + q] = col
        normal[nkt + q, :nkt] = col
    rhs[nkt:] = bg_rhs
    normal[nkt:, nkt:] = bg_normal
    lap("one_factor")
    n_e = len(rows) + (len(excluded) if excluded is not None else 0)
    return FitProblem(layout, normal, rhs, n_e, fshape, model_spectra, timings, excluded)
