"""Bright isolated stars of one image, for the PSF estimate (:mod:`.psf_stars`).

Split from :mod:`orchestrator.dia.pipeline.psf_stars`: finding the stars and masking their
tolerated neighbours; fitting a model to them stays there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Star:
    x: float
    y: float
    flux: float
    neighbours: tuple[tuple[int, int], ...] = ()  # peaks (x, y) tolerated within the stamp


def find_stars(
    image: np.ndarray,
    variance: np.ndarray,
    mask: np.ndarray,
    *,
    half: int,
    min_snr: float = 30.0,
    isolation_px: float | None = None,
    max_stars: int = 200,
    max_neighbour_ratio: float = 0.0,
    core_px: float = 4.0,
) -> list[Star]:
    """Bright, isolated, unmasked point-like sources away from the edges (brightest first).

    ``image`` is background-subtracted. A source is kept when its peak pixel has S/N above
    ``min_snr``, no other source above 5 sigma lies within ``isolation_px`` (default ``2 half``),
    and its ``2 half + 1`` stamp has no bad pixel. With ``max_neighbour_ratio`` > 0, fainter
    neighbours are tolerated (peak S/N below that fraction of the star's, farther than
    ``core_px``) and returned in ``Star.neighbours`` so that the caller can mask them: in a
    Roman field (~400 stars per 512^2) strict isolation leaves 20-30 stars, too few to fill a
    4x oversampled grid at every sub-pixel phase.
    """
    sigma = np.sqrt(np.where(mask | ~(variance > 0), np.inf, variance))
    snr = np.where(mask, 0.0, image / sigma)
    snr = np.nan_to_num(snr, nan=0.0, posinf=0.0, neginf=0.0)
    smooth = ndimage.uniform_filter(snr, 3)
    peaks = (snr == ndimage.maximum_filter(snr, size=5)) & (smooth > 5.0 / 3)
    ys, xs = np.nonzero(peaks & (snr > 5.0))
    iso = 2 * half if isolation_px is None else isolation_px
    bright = snr[ys, xs] > min_snr
    bad_near = ndimage.maximum_filter(mask, size=2 * half + 1, mode="constant", cval=True)
    ny, nx = image.shape
    out: list[Star] = []
    for y, x in zip(ys[bright], xs[bright], strict=True):
        if y < half or x < half or y >= ny - half or x >= nx - half or bad_near[y, x]:
            continue
        d2 = (ys - y) ** 2 + (xs - x) ** 2
        near = (d2 < iso * iso) & (d2 > 0)
        if max_neighbour_ratio > 0:
            peak = snr[y, x]
            if np.any(near & ((snr[ys, xs] >= max_neighbour_ratio * peak) | (d2 <= core_px**2))):
                continue
            tolerated = tuple((int(a), int(b)) for a, b in zip(xs[near], ys[near], strict=True))
        elif near.any():
            continue
        else:
            tolerated = ()
        st = image[y - 1 : y + 2, x - 1 : x + 2]
        tot = float(st.sum())
        if tot <= 0:
            continue
        cy = y + float((st.sum(1) * np.array([-1, 0, 1])).sum()) / tot
        cx = x + float((st.sum(0) * np.array([-1, 0, 1])).sum()) / tot
        flux = float(image[y - half : y + half + 1, x - half : x + half + 1].sum())
        out.append(Star(cx, cy, flux, tolerated))
    out.sort(key=lambda s: -s.flux)
    return out[:max_stars]


def mask_neighbours(var: np.ndarray, star: Star, box: tuple[slice, slice]) -> np.ndarray:
    """The stamp's variance with tolerated neighbours' cores (radius 3 px) made infinite."""
    if not star.neighbours:
        return var
    out = var.copy()
    yy, xx = np.mgrid[box[0], box[1]]
    for nx, ny in star.neighbours:
        out[(yy - ny) ** 2 + (xx - nx) ** 2 <= 9] = 1e30
    return out
