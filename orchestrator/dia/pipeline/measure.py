"""Measuring one prepared pair: resample, subtract, decorrelate, forced photometry.

Split from :mod:`orchestrator.dia.pipeline.pair` (which reads, prepares and turns failures into
rows); :func:`subtract_pair` returns the measured columns of a light-curve row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.signal import fftconvolve

from orchestrator.dia.errors import DiaError
from orchestrator.dia.pipeline.config import PipelineConfig, Prepared
from orchestrator.dia.pipeline.psf import PsfModel
from orchestrator.dia.pipeline.resample import jacobian_at, pixel_map, resample

CLIP_SIGMA = 5.0  # outliers in the photometry stamp's wings (see dia.forced_photometry)
POSITION_SNR = 20.0  # refit an estimated PSF's position above this S/N (_centroid_offset)
MAX_OFFSET_PX = 0.5
FIT_MASK_GROW_PX = 2  # border of masked pixels left out of the subtraction fit (_fit_exclusion)
# dia.subtract can leave out pixels over N sigma after a first fit and refit (clip_sigma); the
# pipeline does not: on issue 9's 4088^2 Roman scenes clipping at 5 sigma took the cores of
# most stars out, after which nothing pinned the kernel's sum (0.66 where 0.99 was right)
FIT_CLIP_SIGMA: float | None = None
# the decorrelated difference is computed in the (2 h + 1)^2 box around the object: its filter
# whitens the noise where the kernel is the one at the object (a whole 4088^2 frame decorrelated
# with it would cost three frame-sized convolutions and mean nothing far away); the default
# 512^2 cutout fits in it, so its products are the whole cutout as before
DECORRELATE_HALF_PX = 256
# sub-pixel positions (x, y) at which estimated PSFs' halves are compared (psf_error): a 4 x 4
# lattice over the pixel, off the 4x model grid's own nodes
ERROR_PHASES = tuple(
    (float(x), float(y))
    for x in np.arange(-0.4375, 0.5, 0.25)
    for y in np.arange(-0.3125, 0.5, 0.25)
)


class NoOverlapError(DiaError):
    """The object or the science cutout is not covered by an image."""


def photometry_psf(
    science_psf: np.ndarray, template_psf: np.ndarray, decorrelation: np.ndarray, half: int
) -> np.ndarray:
    """The image of a point source in the decorrelated difference: ``P_S (x) P_T/|P_T| (x) phi``,
    cropped to ``2 half + 1`` (not renormalised: its sum is the flux fraction it holds)."""
    chain = fftconvolve(science_psf, template_psf / template_psf.sum(), mode="full")
    chain = fftconvolve(chain, decorrelation, mode="full")
    c = chain.shape[0] // 2
    return np.asarray(chain[c - half : c + half + 1, c - half : c + half + 1])


def covered_box(
    lost: np.ndarray, iy: int | tuple[int, int], ix: int | tuple[int, int], need: int
) -> tuple[slice, slice]:
    """A box holding no ``lost`` pixel, found by trimming the edge with the most of them, never
    closer than ``need`` to ``(iy, ix)`` (or to the box of rows ``iy = (low, high)`` and columns
    ``ix``, around several objects); raises NoOverlapError when none is left."""
    y0, y1 = (iy, iy) if isinstance(iy, int) else iy
    x0, x1 = (ix, ix) if isinstance(ix, int) else ix
    r0, r1, c0, c1 = 0, lost.shape[0], 0, lost.shape[1]
    while True:
        box = lost[r0:r1, c0:c1]
        if not box.any():
            return slice(r0, r1), slice(c0, c1)
        edges = {
            "top": box[0].sum() if y0 - r0 > need else -1,
            "bottom": box[-1].sum() if r1 - 1 - y1 > need else -1,
            "left": box[:, 0].sum() if x0 - c0 > need else -1,
            "right": box[:, -1].sum() if c1 - 1 - x1 > need else -1,
        }
        side = max(edges, key=lambda k: edges[k])
        if edges[side] <= 0:
            raise NoOverlapError(
                f"the template does not cover the science image within {need} pixels of the object"
            )
        if side == "top":
            r0 += 1
        elif side == "bottom":
            r1 -= 1
        elif side == "left":
            c0 += 1
        else:
            c1 -= 1


def _crop(p: Prepared, rows: slice, cols: slice) -> Prepared:
    if (rows.start, rows.stop, cols.start, cols.stop) == (0, p.data.shape[0], 0, p.data.shape[1]):
        return p
    return Prepared(
        p.row,
        p.data[rows, cols],
        p.variance[rows, cols],
        p.mask[rows, cols],
        p.wcs.slice((rows, cols)),
        (p.origin[0] + rows.start, p.origin[1] + cols.start),
        p.x - cols.start,
        p.y - rows.start,
        p.zeropoint,
        p.psf,
        p.notes,
    )


def subtract_pair(sci: Prepared, tmpl: Prepared, config: PipelineConfig) -> dict[str, Any]:
    """Resample, subtract, decorrelate and measure; returns the measured columns and products."""
    (measured,) = subtract_group(sci, tmpl, config, [(sci.x, sci.y)])
    if isinstance(measured, DiaError):
        raise measured
    return measured


def subtract_group(
    sci: Prepared,
    tmpl: Prepared,
    config: PipelineConfig,
    positions: list[tuple[float, float]],
) -> list[dict[str, Any] | DiaError]:
    """One subtraction of the pair for every object at ``positions`` (pixels of the science
    cutout), then each object measured on it: per position, its measured columns and products,
    or the error that leaves it out (the template does not cover it). Raises when it covers
    none. One position is :func:`subtract_pair`."""
    from orchestrator import dia  # heavy: imported in the worker only

    xs, ys = pixel_map(sci.wcs, tmpl.wcs, sci.data.shape)
    res = resample(tmpl.data, tmpl.variance, tmpl.mask, xs, ys)
    del xs, ys  # two image-sized maps: 268 MB on a whole 4088^2 frame
    cells = [(math.floor(x + 0.5), math.floor(y + 0.5)) for x, y in positions]
    results: list[dict[str, Any] | DiaError] = []
    for ix, iy in cells:
        inside = 0 <= iy < res.outside.shape[0] and 0 <= ix < res.outside.shape[1]
        if inside and not res.outside[iy, ix]:
            results.append({})
            continue
        results.append(
            NoOverlapError(
                f"{tmpl.row.path}: the template does not cover the object on the science grid "
                f"(coverage of the science cutout {res.coverage:.0%})"
            )
        )
    covered = [i for i, r in enumerate(results) if not isinstance(r, DiaError)]
    if not covered:
        raise results[0]  # type: ignore[misc]
    # the largest box around the objects that the template covers: masked strips would only
    # cost fit time (the core treats their footprints exactly) and carry no information
    h = config.psf_half_px
    need = config.kernel_half_width + h + 8
    iys, ixs = [cells[i][1] for i in covered], [cells[i][0] for i in covered]
    rows, cols = covered_box(res.outside, (min(iys), max(iys)), (min(ixs), max(ixs)), need)
    sci = _crop(sci, rows, cols)
    t_image, t_power = res.image[rows, cols], res.noise_power[rows, cols]
    t_mask, t_outside = res.mask[rows, cols], res.outside[rows, cols]
    del res  # its per-pixel variance is not used (noise_power is): 134 MB on a whole frame
    shape = sci.data.shape
    jac = jacobian_at(sci.wcs, tmpl.wcs, sci.x, sci.y)
    psf_s = sci.psf.stamp(h)
    psf_t = tmpl.psf.stamp(h, jacobian=jac)
    # keep the objects out of the kernel fit: a bright transient would otherwise pull the kernel
    r_ex = config.kernel_half_width + h + 3
    exclude = np.zeros(shape, dtype=bool)
    for i in covered:
        x, y = positions[i][0] - cols.start, positions[i][1] - rows.start
        ix, iy = cells[i][0] - cols.start, cells[i][1] - rows.start
        near = (slice(max(0, iy - r_ex), iy + r_ex + 1), slice(max(0, ix - r_ex), ix + r_ex + 1))
        yy, xx = np.ogrid[near]
        exclude[near] |= (yy - y) ** 2 + (xx - x) ** 2 <= r_ex**2
    # inpainted pixels (saturated cores, bad columns, hot pixels) are guesses: keep every fit
    # pixel whose footprint (kernel + cross-convolution stamp) reaches one out of the fit
    exclude |= _fit_exclusion(sci.mask | t_mask, t_outside, config)
    sub = dia.subtract(
        sci.data,
        t_image,
        science_psf=psf_s,
        template_psf=psf_t,
        science_var=sci.variance,
        template_var=t_power,
        mask=t_outside,
        kernel_half_width=config.kernel_half_width,
        kernel_poly_order=config.kernel_poly_order,
        background_poly_order=config.background_poly_order,
        backend=config.backend,  # type: ignore[arg-type]
        fit_exclude=exclude,
        clip_sigma=FIT_CLIP_SIGMA,
    )
    for i in covered:
        at = (positions[i][0] - cols.start, positions[i][1] - rows.start)
        results[i] = _measure(sub, sci, psf_t, t_mask, at, h)
    return results


def _measure(
    sub: Any,
    sci: Prepared,
    psf_t: np.ndarray,
    t_mask: np.ndarray,
    at: tuple[float, float],
    h: int,
) -> dict[str, Any]:
    """One object on a subtraction: decorrelated around it, its photometry PSF at its sub-pixel
    position, forced photometry (the position refitted where the PSF was estimated)."""
    from orchestrator import dia

    x, y = at
    ix, iy = math.floor(x + 0.5), math.floor(y + 0.5)
    # decorrelated in a box around the object only: the filter is the one for the kernel there
    dec = sub.decorrelate(x, y, half=DECORRELATE_HALF_PX)
    b0, b1 = dec.origin
    rows_d = slice(b0, b0 + dec.image.shape[0])
    cols_d = slice(b1, b1 + dec.image.shape[1])
    # the science PSF rendered at the object's sub-pixel position (undersampled: sample the
    # effective PSF there, never phase-shift a pixel stamp), over the whole photometry stamp
    hp = h + 3

    def psf_for(ox: float, oy: float) -> np.ndarray:
        psf_at = sci.psf.stamp(hp, x - ix + ox, y - iy + oy)
        return photometry_psf(psf_at, psf_t, dec.filter, hp)

    psf_phot = psf_for(0.0, 0.0)
    psf_err = psf_error(sci.psf, psf_t, dec.filter, hp)
    # inpainted pixels (either image) are guesses: leave them out of the photometry
    flagged = ndimage.binary_dilation((sci.mask | t_mask)[rows_d, cols_d])
    image = np.where(flagged, np.nan, dec.image)
    lx, ly = ix - b1, iy - b0  # the object in the decorrelated box
    phot = dia.forced_photometry(
        image, dec.variance, psf_phot, float(lx), float(ly), clip_sigma=CLIP_SIGMA
    )
    offset = (0.0, 0.0)
    if not sci.psf.origin_known and abs(phot.flux) > POSITION_SNR * phot.flux_err:
        offset = _centroid_offset(image, dec.variance, psf_for, lx, ly)
        psf_phot = psf_for(*offset)
        phot = dia.forced_photometry(
            image, dec.variance, psf_phot, float(lx), float(ly), clip_sigma=CLIP_SIGMA
        )
    enclosed = float(psf_phot.sum())
    unit = psf_phot / enclosed
    # the photometry stamp on the image, cut where it runs off the edge (never wrapped)
    r0, c0 = max(0, ly - hp), max(0, lx - hp)
    box = (slice(r0, ly + hp + 1), slice(c0, lx + hp + 1))
    stamp_var = dec.variance[box]
    on_image = unit[r0 - (ly - hp) :, c0 - (lx - hp) :][: stamp_var.shape[0], : stamp_var.shape[1]]
    masked_w, all_w = _weights(on_image, stamp_var, flagged[box])
    flux = phot.flux / enclosed
    return {
        "flux": flux,
        # the photometry's own error and the estimated PSFs' error (a fraction of the flux)
        "flux_err": math.hypot(phot.flux_err / enclosed, psf_err * flux),
        "psf_flux_err": abs(psf_err * flux),
        "chi2_dof": phot.chi2_dof,
        "kernel_sum": sub.kernel_sum,
        "fit_chi2_dof": sub.stats.chi2_dof,
        "psf_fraction": enclosed,
        "backend": sub.backend,
        "n_flagged_in_stamp": int(flagged[box].sum()),
        "n_clipped": phot.n_clipped,
        "clipped_weight": phot.clipped_weight,
        "masked_weight": masked_w / all_w if all_w > 0 else 1.0,
        # noise-equivalent area of the unit-flux PSF, and the noise per pixel there
        "nea": float(1.0 / np.sum(unit**2)),
        "position_offset_px": math.hypot(*offset),
        "sky_rms": float(np.sqrt(np.nanmedian(stamp_var))),
        "_products": (dec.image, dec.variance, unit, _crop(sci, rows_d, cols_d)),
    }


def psf_error(science: PsfModel, template_psf: np.ndarray, filt: np.ndarray, hp: int) -> float:
    """The fractional flux error that an estimated science PSF adds to a point source's flux
    (0 with a PSF file, or a model estimated from too few stars to split).

    An estimated PSF comes with two independent estimates from disjoint halves of its stars
    (``PsfModel.halves``); the photometry PSF (:func:`photometry_psf`) is built from each at
    :data:`ERROR_PHASES` sub-pixel positions, and one is fitted to the other (scale and a small
    shift, as the position refit would). Each half has about twice the variance of the model
    from all the stars, so its error is half the rms difference: ``sqrt(mean((r - 1)^2)) / 2``.
    Averaged over
    phases, not read at the object's one phase: a single draw of a difference is too noisy to
    be an error bar. The template's PSF adds nothing to first order: the object in the
    difference image is the science image convolved with the *model* of the template's PSF
    (cross-convolution), the same that the photometry PSF holds. On issue 9's 512^2 Roman
    scenes the science model's flux is 1-3 % rms off the truth over phases (a term larger than
    the photon noise of epochs above ~10^4 counts, which the error bars lacked: pull std 1.5).
    """
    if science.halves is None:
        return 0.0
    ratios = []
    for dx, dy in ERROR_PHASES:
        a = photometry_psf(science.halves[0].stamp(hp, dx, dy), template_psf, filt, hp)
        b = photometry_psf(science.halves[1].stamp(hp, dx, dy), template_psf, filt, hp)
        gy, gx = np.gradient(a)
        design = np.stack([a.ravel(), gx.ravel(), gy.ravel()], 1)
        coef, *_ = np.linalg.lstsq(design, b.ravel(), rcond=None)
        ratios.append(float(coef[0]))  # the flux model a gives a source of profile b, per unit
    return float(np.sqrt(np.mean((np.asarray(ratios) - 1.0) ** 2)) / 2)


def _centroid_offset(
    image: np.ndarray,
    variance: np.ndarray,
    psf_for: Callable[[float, float], np.ndarray],
    ix: int,
    iy: int,
) -> tuple[float, float]:
    """The offset (<= ``MAX_OFFSET_PX``) of the PSF that fits the object best, flux free.

    An estimated PSF is centred on its own centroid; the point the WCS maps the object to is
    the optical axis of the PSF model (GalSim's, STPSF's), which for Roman's asymmetric PSFs
    lies 0.1-0.15 px from the centroid. At the object's position from the WCS that misplaced
    an undersampled PSF enough to lose 5-7 % of the flux on issue 9's scenes. Only rows with
    S/N above ``POSITION_SNR`` are refitted: there the position costs no flux accuracy, while
    at low S/N a free position pulls the flux up (it chases the noise).
    """
    from scipy.optimize import minimize

    from orchestrator import dia

    def chi2(o: np.ndarray) -> float:
        if np.hypot(*o) > MAX_OFFSET_PX:
            return 1e30
        phot = dia.forced_photometry(image, variance, psf_for(*o), float(ix), float(iy))
        return phot.chi2_dof

    best = minimize(
        chi2, np.zeros(2), method="Nelder-Mead", options={"xatol": 0.005, "fatol": 1e-4}
    )
    return (float(best.x[0]), float(best.x[1])) if best.fun < chi2(np.zeros(2)) else (0.0, 0.0)


def _weights(unit: np.ndarray, variance: np.ndarray, masked: np.ndarray) -> tuple[float, float]:
    """The information ``sum P^2 / V`` on masked pixels of a stamp, and on all of them."""
    ok = np.isfinite(variance) & (variance > 0)
    w = np.where(ok, unit**2 / np.where(ok, variance, 1.0), 0.0)
    return float(w[masked].sum()), float(w.sum())


def _fit_exclusion(masked: np.ndarray, outside: np.ndarray, config: PipelineConfig) -> np.ndarray:
    """Fit pixels whose footprint (kernel + cross-convolution stamp) reaches a masked pixel.

    Inpainted pixels (saturated cores, bad columns, hot pixels) are guesses: they and a
    ``FIT_MASK_GROW_PX`` border are left out of the fit. Leaving out every pixel whose model
    reads one (a border of ``w + h`` = 21 px) was tried on issue 9's scenes: the same fluxes
    (within 0.3 sigma) and kernel sums (within 0.5 %) as a 0-px border, at 3-6x the fit time
    when each excluded pixel was a rank-one update of the normal matrix (since then most are
    solved for by conjugate gradients, see ``dia.normal``: not re-tried). On a small or heavily
    masked cutout even the border can leave fewer pixels
    than the fit needs: it then shrinks until 4 pixels per unknown remain.
    """
    from orchestrator.dia.basis import Layout

    need = (
        4
        * Layout(
            config.kernel_half_width, config.kernel_poly_order, config.background_poly_order, True
        ).n_unknowns
    )
    radius = FIT_MASK_GROW_PX
    while True:
        exclude = _dilate(masked, radius)
        if radius == 0 or np.count_nonzero(~(exclude | outside)) >= need:
            return exclude
        radius //= 2


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0 or not mask.any():
        return mask.copy()
    return np.asarray(
        ndimage.maximum_filter(mask, size=2 * radius + 1, mode="constant", cval=False)
    )
