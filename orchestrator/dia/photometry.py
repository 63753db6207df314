"""Forced PSF photometry at a known position on a (decorrelated) difference image.

``f = sum(P D / V) / sum(P^2 / V)``, ``sigma_f^2 = 1 / sum(P^2 / V)`` (the optimal linear
estimator for independent pixel noise), with ``P`` the PSF rendered at the sub-pixel position and
normalised by the sum of the *full* PSF, so that flux outside the stamp is accounted for (an
aperture correction built into the profile).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy.ndimage import binary_dilation

from orchestrator.dia.errors import DiaInputError


@dataclass(frozen=True)
class Photometry:
    """Result of one forced PSF fit."""

    flux: float
    flux_err: float
    chi2_dof: float
    n_pixels: int
    x: float
    y: float
    n_clipped: int = 0  # pixels left out as outliers (``clip_sigma``)
    clipped_weight: float = 0.0  # their share of the fit's information sum(P^2 / V)


def shift_stamp(psf: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """The stamp translated by ``(dy, dx)`` pixels (Fourier phase shift on a padded grid)."""
    pad = max(psf.shape) // 2 + 2
    grid = np.pad(psf, pad)
    spec = sfft.rfft2(grid)
    fy = sfft.fftfreq(grid.shape[0])[:, None]
    fx = sfft.rfftfreq(grid.shape[1])[None, :]
    spec *= np.exp(-2j * np.pi * (fy * dy + fx * dx))
    shifted = sfft.irfft2(spec, s=grid.shape)
    return np.asarray(shifted[pad:-pad, pad:-pad])


def render_psf(
    psf: np.ndarray, x: float, y: float, stamp_half_width: int
) -> tuple[np.ndarray, int, int]:
    """The PSF centred at ``(x, y)`` (x = column) on the stamp around ``(round(y), round(x))``.

    Returns ``(stamp, row0, col0)``; the stamp sums to at most 1 (the full PSF is normalised).
    """
    total = float(psf.sum())
    if not np.isfinite(total) or total <= 0:
        raise DiaInputError(f"PSF must have a positive finite sum, got {total}")
    ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    shifted = shift_stamp(psf / total, y - iy, x - ix)
    h, hp = stamp_half_width, psf.shape[0] // 2
    out = np.zeros((2 * h + 1, 2 * h + 1))
    lo, hi = max(-h, -hp), min(h, hp)
    out[lo + h : hi + h + 1, lo + h : hi + h + 1] = shifted[
        lo + hp : hi + hp + 1, lo + hp : hi + hp + 1
    ]
    return out, iy - h, ix - h


def forced_photometry(
    image: np.ndarray,
    variance: np.ndarray,
    psf: np.ndarray,
    x: float,
    y: float,
    *,
    stamp_half_width: int | None = None,
    clip_sigma: float | None = None,
    core_fraction: float = 0.05,
) -> Photometry:
    """Forced PSF photometry at ``(x, y)`` (pixel coordinates, x = column, 0-based centres).

    Pixels that are NaN, masked (NaN) or have non-positive variance are left out of the fit.
    ``stamp_half_width`` defaults to the PSF's half-width.

    ``clip_sigma`` leaves out, iteratively, pixels of the PSF's wings (model below
    ``core_fraction`` of its peak) whose residual exceeds ``clip_sigma`` standard deviations,
    with their 8 neighbours: the residual of a bright neighbour that the subtraction left
    would otherwise enter the flux with a small weight times a huge value. The core is never
    clipped: a misfit there is the fit failing, which ``chi2_dof`` reports.
    """
    image = np.asarray(image, dtype=np.float64)
    variance = np.asarray(variance, dtype=np.float64)
    psf = np.asarray(psf, dtype=np.float64)
    if image.ndim != 2 or variance.shape != image.shape:
        raise DiaInputError(
            f"image and variance must be 2-D of one shape, got {image.shape}, {variance.shape}"
        )
    if psf.ndim != 2 or psf.shape[0] != psf.shape[1] or psf.shape[0] % 2 == 0:
        raise DiaInputError(f"psf must be a square stamp of odd size, got {psf.shape}")
    if not (np.isfinite(x) and np.isfinite(y)):
        raise DiaInputError(f"position must be finite, got ({x}, {y})")
    h = psf.shape[0] // 2 if stamp_half_width is None else int(stamp_half_width)
    if h < 1:
        raise DiaInputError(f"stamp_half_width must be >= 1, got {h}")
    model, r0, c0 = render_psf(psf, x, y, h)
    rows = np.arange(r0, r0 + 2 * h + 1)
    cols = np.arange(c0, c0 + 2 * h + 1)
    inside = ((rows >= 0) & (rows < image.shape[0]))[:, None] & (
        (cols >= 0) & (cols < image.shape[1])
    )[None, :]
    d = np.full(model.shape, np.nan)
    v = np.full(model.shape, np.nan)
    rr, cc = np.clip(rows, 0, image.shape[0] - 1), np.clip(cols, 0, image.shape[1] - 1)
    d[inside] = image[np.ix_(rr, cc)][inside]
    v[inside] = variance[np.ix_(rr, cc)][inside]
    usable = np.isfinite(d) & np.isfinite(v) & (v > 0)
    if usable.sum() < 2:
        raise DiaInputError(f"no usable pixels around ({x}, {y}) for forced photometry")
    vv = np.where(usable, v, 1.0)
    info_all = float(np.sum(np.where(usable, model * model / vv, 0.0)))
    wing = model < core_fraction * float(model.max())
    clipped = np.zeros(model.shape, dtype=bool)
    for _ in range(8):
        good = usable & ~clipped
        p, dd, vg = model[good], d[good], vv[good]
        info = float(np.sum(p * p / vg))
        if good.sum() < 2 or info <= 0:
            raise DiaInputError(f"no usable pixels around ({x}, {y}) for forced photometry")
        flux = float(np.sum(p * dd / vg)) / info
        if clip_sigma is None:
            break
        resid = np.where(usable, np.abs(d - flux * model) / np.sqrt(vv), 0.0)
        out = (resid > clip_sigma) & wing & usable
        grown = binary_dilation(out, structure=np.ones((3, 3), dtype=bool))
        new = grown & wing & usable & ~clipped
        if not new.any():
            break
        clipped |= new
    good = usable & ~clipped
    p, dd, vg = model[good], d[good], vv[good]
    chi2 = float(np.sum((dd - flux * p) ** 2 / vg))
    return Photometry(
        flux,
        float(np.sqrt(1.0 / info)),
        chi2 / max(1, int(good.sum()) - 1),
        int(good.sum()),
        x,
        y,
        int(clipped.sum()),
        1.0 - info / info_all if info_all > 0 else 0.0,
    )
