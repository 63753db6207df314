"""Sky background and noise of one image (a mesh of sigma-clipped medians, as SExtractor does)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def clipped_stats(
    values: np.ndarray, nsigma: float = 3.0, iterations: int = 5
) -> tuple[float, float]:
    """Median and robust standard deviation (1.4826 MAD) after iterative sigma clipping."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return 0.0, 0.0
    for _ in range(iterations):
        med = float(np.median(v))
        sd = 1.4826 * float(np.median(np.abs(v - med)))
        if sd <= 0:
            break
        keep = np.abs(v - med) < nsigma * sd
        if keep.all():
            break
        v = v[keep]
    med = float(np.median(v))
    return med, 1.4826 * float(np.median(np.abs(v - med)))


def background(image: np.ndarray, mask: np.ndarray, box_px: int = 64) -> np.ndarray:
    """A smooth background: clipped medians in ``box_px`` cells, 3x3 median-filtered, splined."""
    ny, nx = image.shape
    gy = max(1, round(ny / box_px))
    gx = max(1, round(nx / box_px))
    ey = np.linspace(0, ny, gy + 1).astype(int)
    ex = np.linspace(0, nx, gx + 1).astype(int)
    mesh = np.full((gy, gx), np.nan)
    good = ~mask & np.isfinite(image)
    for i in range(gy):
        for j in range(gx):
            cell = image[ey[i] : ey[i + 1], ex[j] : ex[j + 1]]
            ok = good[ey[i] : ey[i + 1], ex[j] : ex[j + 1]]
            if ok.sum() > 0.3 * ok.size:
                mesh[i, j], _ = clipped_stats(cell[ok])
    if np.all(np.isnan(mesh)):
        return np.zeros_like(image)
    mesh = np.where(np.isnan(mesh), np.nanmedian(mesh), mesh)
    if gy >= 3 and gx >= 3:
        mesh = ndimage.median_filter(mesh, size=3, mode="nearest")
    if gy == 1 and gx == 1:
        return np.full_like(image, mesh[0, 0])
    cy = (ey[:-1] + ey[1:] - 1) / 2
    cx = (ex[:-1] + ex[1:] - 1) / 2
    # map pixel coordinates to fractional mesh indices; order-1 spline, flat beyond the centres
    fy = np.interp(np.arange(ny), cy, np.arange(gy))
    fx = np.interp(np.arange(nx), cx, np.arange(gx))
    order = 3 if min(gy, gx) >= 4 else 1
    yy, xx = np.meshgrid(fy, fx, indexing="ij")
    return ndimage.map_coordinates(mesh, [yy, xx], order=order, mode="nearest")


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


def inpaint(
    image: np.ndarray, mask: np.ndarray, sigma_px: float = 1.0, rounds: int = 20
) -> np.ndarray:
    """``image`` with its ``mask``ed pixels replaced by a Gaussian-weighted mean of good neighbours.

    The subtraction core turns each bad pixel into a NaN footprint of the kernel plus PSF size (and
    the decorrelation widens it again), so isolated hot pixels and bad columns near the object
    would cost the measurement; filled pixels are smooth guesses instead, and the pipeline still
    leaves the originally bad pixels out of the forced photometry. Larger holes fill from their
    edges inwards, one ring per round.
    """
    out = np.where(mask, 0.0, image)
    todo = mask.copy()
    good = (~mask).astype(np.float64)
    for _ in range(rounds):
        if not todo.any():
            break
        num = ndimage.gaussian_filter(out * good, sigma_px, mode="nearest")
        den = ndimage.gaussian_filter(good, sigma_px, mode="nearest")
        fill = todo & (den > 1e-3)
        out[fill] = num[fill] / den[fill]
        good[fill] = 1.0
        todo &= ~fill
    if todo.any():
        out[todo] = float(np.median(out[~todo])) if (~todo).any() else 0.0
    return out
