"""Sky background and noise of one image (a mesh of sigma-clipped medians, as SExtractor does)."""

from __future__ import annotations

import numba
import numpy as np
from scipy import ndimage


@numba.njit(cache=True, fastmath=False)
def _select(a: np.ndarray, n: int, k: int) -> float:  # pragma: no cover
    """The ``k``-th smallest of ``a[:n]`` (quickselect in place: afterwards ``a[:k] <= a[k]``)."""
    lo, hi = 0, n - 1
    while hi > lo:
        mid = (lo + hi) // 2
        # median of three as the pivot, which also guards the scans below
        if a[mid] < a[lo]:
            a[mid], a[lo] = a[lo], a[mid]
        if a[hi] < a[lo]:
            a[hi], a[lo] = a[lo], a[hi]
        if a[hi] < a[mid]:
            a[hi], a[mid] = a[mid], a[hi]
        pivot = a[mid]
        i, j = lo, hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return float(a[k])


@numba.njit(cache=True, fastmath=False)
def _median(a: np.ndarray, n: int) -> float:  # pragma: no cover
    """``np.median(a[:n])`` (``n >= 1``, finite values), reordering ``a[:n]``."""
    k = n // 2
    upper = _select(a, n, k)
    if n % 2:
        return upper
    lower = a[0]
    for i in range(1, k):
        lower = max(lower, a[i])
    return float((lower + upper) / 2)


@numba.njit(cache=True, fastmath=False)
def _clipped(  # pragma: no cover
    v: np.ndarray, n: int, work: np.ndarray, nsigma: float, iterations: int
) -> tuple[float, float]:
    """Median and 1.4826 MAD of the finite ``v[:n]`` (``n >= 1``) after iterative sigma
    clipping; ``v`` and ``work`` (as long) are scratch: no allocation per call."""
    for _ in range(iterations):
        med = _median(v, n)
        for i in range(n):
            work[i] = abs(v[i] - med)
        sd = 1.4826 * _median(work, n)
        if sd <= 0:
            break
        limit = nsigma * sd
        kept = 0
        for i in range(n):
            if abs(v[i] - med) < limit:
                v[kept] = v[i]
                kept += 1
        if kept == n:
            break
        n = kept  # >= 1: the middle value(s) lie within the MAD of the median
    med = _median(v, n)
    for i in range(n):
        work[i] = abs(v[i] - med)
    return med, 1.4826 * _median(work, n)


@numba.njit(parallel=True, cache=True, fastmath=False)
def _mesh(  # pragma: no cover
    image: np.ndarray,
    good: np.ndarray,
    ey: np.ndarray,
    ex: np.ndarray,
    min_fraction: float,
    nsigma: float,
    iterations: int,
    mesh: np.ndarray,
) -> None:
    """``mesh[i, j]``: clipped median of the good pixels of cell ``(i, j)``, NaN where fewer
    than ``min_fraction`` of its pixels are good. One cell per iteration, in parallel."""
    gy, gx = mesh.shape
    for cell in numba.prange(gy * gx):
        i, j = cell // gx, cell % gx
        buf = np.empty((ey[i + 1] - ey[i]) * (ex[j + 1] - ex[j]))
        work = np.empty(buf.size)
        n = 0
        for r in range(ey[i], ey[i + 1]):
            for c in range(ex[j], ex[j + 1]):
                if good[r, c]:
                    buf[n] = image[r, c]
                    n += 1
        if n > 0 and n > min_fraction * buf.size:
            mesh[i, j] = _clipped(buf, n, work, nsigma, iterations)[0]
        else:
            mesh[i, j] = np.nan


def clipped_stats(
    values: np.ndarray, nsigma: float = 3.0, iterations: int = 5
) -> tuple[float, float]:
    """Median and robust standard deviation (1.4826 MAD) after iterative sigma clipping."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]  # a copy: the kernel reorders it
    if v.size == 0:
        return 0.0, 0.0
    med, sd = _clipped(v, v.size, np.empty(v.size), float(nsigma), int(iterations))
    return float(med), float(sd)


def _axis_operator(centres: np.ndarray, n: int, order: int) -> np.ndarray:
    """The ``(n, len(centres))`` matrix that splines a mesh axis onto pixels ``0..n-1``:
    ``map_coordinates`` (``mode="nearest"``) of each unit vector, the prefilter included.

    The spline is separable and the pixel coordinates are a grid, so the 2-d interpolation is
    ``A_y mesh A_x^T``: two small matrix products instead of a spline evaluated per pixel.
    """
    g = len(centres)
    # pixel coordinates as fractional mesh indices; flat beyond the first and last centres
    f = np.interp(np.arange(n), centres, np.arange(g))
    op = np.empty((n, g))
    for k in range(g):
        unit = np.zeros(g)
        unit[k] = 1.0
        op[:, k] = ndimage.map_coordinates(unit, [f], order=order, mode="nearest")
    return op


def background(image: np.ndarray, mask: np.ndarray, box_px: int = 64) -> np.ndarray:
    """A smooth background: clipped medians in ``box_px`` cells, 3x3 median-filtered, splined
    (cubic, linear when the mesh is under 4 cells on a side)."""
    ny, nx = image.shape
    gy = max(1, round(ny / box_px))
    gx = max(1, round(nx / box_px))
    ey = np.linspace(0, ny, gy + 1).astype(np.int64)
    ex = np.linspace(0, nx, gx + 1).astype(np.int64)
    mesh = np.empty((gy, gx))
    img = np.ascontiguousarray(image, dtype=np.float64)
    good = ~np.asarray(mask, dtype=np.bool_) & np.isfinite(img)
    _mesh(img, good, ey, ex, 0.3, 3.0, 5, mesh)
    del good
    if np.all(np.isnan(mesh)):
        return np.zeros_like(image)
    mesh = np.where(np.isnan(mesh), np.nanmedian(mesh), mesh)
    if gy >= 3 and gx >= 3:
        mesh = ndimage.median_filter(mesh, size=3, mode="nearest")
    if gy == 1 and gx == 1:
        return np.full_like(image, mesh[0, 0])
    cy = (ey[:-1] + ey[1:] - 1) / 2
    cx = (ex[:-1] + ex[1:] - 1) / 2
    order = 3 if min(gy, gx) >= 4 else 1
    op_y = _axis_operator(cy, ny, order)
    op_x = _axis_operator(cx, nx, order)
    return np.asarray((op_y @ mesh) @ op_x.T)


def estimate_variance(image: np.ndarray, mask: np.ndarray, gain: float | None) -> np.ndarray:
    """Per-pixel variance of a background-subtracted image without an error map.

    The sky RMS (clipped MAD of the pixels) everywhere, plus the sources' Poisson noise
    ``max(image, 0) / gain`` when the gain (e- per image unit) is known.
    """
    _, rms = clipped_stats(image[~mask])
    var = np.full(image.shape, max(rms, 1e-30) ** 2)
    if gain:
        var += np.clip(np.nan_to_num(image), 0, None) / gain
    return var


@numba.njit(parallel=True, cache=True, fastmath=False)
def _smooth_at(  # pragma: no cover
    values: np.ndarray, good: np.ndarray, rows: np.ndarray, cols: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``gaussian_filter(values * good)`` and ``gaussian_filter(good)`` (``mode="nearest"``,
    symmetric weights ``w``) at the pixels ``(rows, cols)`` only.

    Same arithmetic as ``scipy.ndimage``'s separable correlation (rows first, then columns; the
    centre tap, then the pairs from the farthest in), so the values agree to the last bits.
    """
    ny, nx = values.shape
    h = w.size // 2
    num = np.empty(rows.size)
    den = np.empty(rows.size)
    for k in numba.prange(rows.size):
        r, c = rows[k], cols[k]
        acc_n = 0.0
        acc_d = 0.0
        for jc in range(2):  # pass 0: the centre column; 1: the column pairs
            for j in range(h, 0, -1) if jc == 1 else range(1):
                col_n = 0.0
                col_d = 0.0
                for side in range(2 if jc == 1 else 1):
                    cc = min(max(c + (j if side == 0 else -j), 0), nx - 1)
                    g0 = 1.0 if good[r, cc] else 0.0
                    tn = values[r, cc] * g0 * w[h]
                    td = g0 * w[h]
                    for i in range(h, 0, -1):
                        ra = min(max(r - i, 0), ny - 1)
                        rb = min(max(r + i, 0), ny - 1)
                        ga = 1.0 if good[ra, cc] else 0.0
                        gb = 1.0 if good[rb, cc] else 0.0
                        tn += (values[ra, cc] * ga + values[rb, cc] * gb) * w[h - i]
                        td += (ga + gb) * w[h - i]
                    col_n += tn
                    col_d += td
                if jc == 0:
                    acc_n = col_n * w[h]
                    acc_d = col_d * w[h]
                else:
                    acc_n += col_n * w[h - j]
                    acc_d += col_d * w[h - j]
        num[k] = acc_n
        den[k] = acc_d
    return num, den


def inpaint(
    image: np.ndarray, mask: np.ndarray, sigma_px: float = 1.0, rounds: int = 20
) -> np.ndarray:
    """``image`` with its ``mask``ed pixels replaced by a Gaussian-weighted mean of good neighbours.

    The subtraction core turns each bad pixel into a NaN footprint of the kernel plus PSF size (and
    the decorrelation widens it again), so isolated hot pixels and bad columns near the object
    would cost the measurement; filled pixels are smooth guesses instead, and the pipeline still
    leaves the originally bad pixels out of the forced photometry. Larger holes fill from their
    edges inwards, one ring per round. The Gaussian sums are taken at the pixels still to fill
    only (a whole-image filter per round would cost seconds on a 4088^2 image).
    """
    out = np.where(mask, 0.0, image).astype(np.float64, copy=False)
    # booleans (the kernel reads them as 0 and 1): a float64 copy of the mask cost 0.2 s a
    # call on a 4088^2 image
    good = ~np.asarray(mask, dtype=np.bool_)
    # the filter's own weights: the response to a unit impulse (truncated at 4 sigma)
    radius = int(4.0 * sigma_px + 0.5)
    impulse = np.zeros(2 * radius + 1)
    impulse[radius] = 1.0
    weights = ndimage.gaussian_filter1d(impulse, sigma_px, mode="constant")
    rows, cols = np.nonzero(mask)  # the pixels still to fill
    for _ in range(rounds):
        if rows.size == 0:
            break
        num, den = _smooth_at(out, good, rows, cols, weights)
        fill = den > 1e-3
        out[rows[fill], cols[fill]] = num[fill] / den[fill]
        good[rows[fill], cols[fill]] = True
        rows, cols = rows[~fill], cols[~fill]
    if rows.size:
        todo = np.zeros(out.shape, dtype=np.bool_)
        todo[rows, cols] = True
        out[todo] = float(np.median(out[~todo])) if (~todo).any() else 0.0
    return out
