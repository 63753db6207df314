"""One science x template pair: cutouts, background, PSFs, resampling, subtraction, photometry.

Runs in a worker process. Each step raises an :class:`~orchestrator.errors.OrchestratorError`
subclass with a message naming the file; :func:`process_pair` turns any failure into a row with
``success = False`` so that one bad image never stops the light curve.
"""

from __future__ import annotations

import math
import os
import time
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.signal import fftconvolve

from orchestrator.dia.errors import DiaError
from orchestrator.dia.io import ExposureRow, FitsImage, ImageReadError, read_psf_image
from orchestrator.dia.pipeline.background import background, estimate_variance, inpaint
from orchestrator.dia.pipeline.psf import PsfModel, estimate_psf, parse_psf_option
from orchestrator.dia.pipeline.resample import jacobian_at, pixel_map, resample

MAG_ERR_FACTOR = 2.5 / math.log(10)  # 1.0857


class NoOverlapError(DiaError):
    """The object or the science cutout is not covered by an image."""


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a pair needs besides its two exposures (hashable: it keys the caches)."""

    oid: str
    ra: float
    dec: float
    band: str
    outdir: Path
    backend: str = "auto"
    kernel_half_width: int = 9
    kernel_poly_order: int = 2
    background_poly_order: int = 0
    psf: str | None = None  # None: the list's psf column, else estimated; FILE or gaussian:FWHM
    cutout_px: int = 512  # science cutout side; 0 = whole image
    psf_half_px: int = 12  # PSF stamps are 2 h + 1 square
    psf_region_px: int = 1024  # side of the region searched for PSF stars
    background_box_px: int = 64
    zeropoint_key: str | None = None
    keep_products: bool = False


@dataclass
class Prepared:
    """One exposure's cutout around the object: sky-subtracted pixels, noise, mask, PSF."""

    row: ExposureRow
    data: np.ndarray
    variance: np.ndarray
    mask: np.ndarray
    wcs: Any
    origin: tuple[int, int]
    x: float  # object position in the cutout (0-based, x = column)
    y: float
    zeropoint: float
    psf: PsfModel
    notes: list[str] = field(default_factory=list)


def _box(centre: float, half: int, n: int) -> slice:
    if half <= 0:
        return slice(0, n)
    c = math.floor(centre + 0.5)
    return slice(max(0, c - half), min(n, c + half + 1))


@lru_cache(maxsize=8)
def prepare(row: ExposureRow, config: PipelineConfig, half: int) -> Prepared:
    """Read, cut out (``2 half + 1`` around the object; 0 = whole image), subtract the sky,
    estimate the noise when the file has none, and get the PSF. Cached per process."""
    if not row.path.exists():
        raise ImageReadError(f"{row.path}: no such file (listed at {row.source})")
    with FitsImage(row.path, config.zeropoint_key) as img:
        x, y = img.world_to_pixel(config.ra, config.dec)
        ny, nx = img.shape
        if not (-0.5 <= x <= nx - 0.5 and -0.5 <= y <= ny - 0.5):
            raise NoOverlapError(
                f"{row.path}: the object (RA {config.ra}, Dec {config.dec}) falls outside the "
                f"image, at pixel ({x:.1f}, {y:.1f}) of {nx} x {ny}"
            )
        cut = img.read(_box(y, half, ny), _box(x, half, nx))
        psf = _psf_for(row, config, img, x, y)
    bkg = background(cut.data, cut.mask, config.background_box_px)
    data = cut.data - bkg
    notes = []
    if cut.variance is None:
        variance = estimate_variance(data, cut.mask, cut.gain)
        notes.append("variance estimated from the image")
    else:
        variance = cut.variance
    if cut.mask.any():
        data = inpaint(data, cut.mask)
        variance = inpaint(variance, cut.mask)
    r0, c0 = cut.origin
    return Prepared(
        row,
        data,
        variance,
        cut.mask,
        cut.wcs,
        cut.origin,
        x - c0,
        y - r0,
        cut.zeropoint,
        psf,
        notes,
    )


def _psf_for(
    row: ExposureRow, config: PipelineConfig, img: FitsImage, x: float, y: float
) -> PsfModel:
    spec = config.psf
    if spec is not None:
        kind, value = parse_psf_option(spec)
        if kind == "gaussian":
            return PsfModel.gaussian(float(value), half_px=config.psf_half_px + 2)
        return PsfModel.from_instrumental(*read_psf_image(Path(str(value))))
    if row.psf_path is not None:
        return PsfModel.from_instrumental(*read_psf_image(row.psf_path))
    # estimate from the stars in a region around the object
    half = max(config.psf_region_px, config.cutout_px) // 2
    region = img.read(_box(y, half, img.shape[0]), _box(x, half, img.shape[1]))
    bkg = background(region.data, region.mask, config.background_box_px)
    data = region.data - bkg
    var = (
        region.variance
        if region.variance is not None
        else estimate_variance(data, region.mask, region.gain)
    )
    try:
        return estimate_psf(data, var, region.mask, half=min(config.psf_half_px, 10))
    except DiaError as exc:
        raise type(exc)(f"{row.path}: {exc}") from exc


def photometry_psf(
    science_psf: np.ndarray, template_psf: np.ndarray, decorrelation: np.ndarray, half: int
) -> np.ndarray:
    """The image of a point source in the decorrelated difference: ``P_S (x) P_T/|P_T| (x) phi``,
    cropped to ``2 half + 1`` (not renormalised: its sum is the flux fraction it holds)."""
    chain = fftconvolve(science_psf, template_psf / template_psf.sum(), mode="full")
    chain = fftconvolve(chain, decorrelation, mode="full")
    c = chain.shape[0] // 2
    return np.asarray(chain[c - half : c + half + 1, c - half : c + half + 1])


def covered_box(lost: np.ndarray, iy: int, ix: int, need: int) -> tuple[slice, slice]:
    """A box holding no ``lost`` pixel, found by trimming the edge with the most of them, never
    closer than ``need`` to ``(iy, ix)``; raises NoOverlapError when none is left."""
    r0, r1, c0, c1 = 0, lost.shape[0], 0, lost.shape[1]
    while True:
        box = lost[r0:r1, c0:c1]
        if not box.any():
            return slice(r0, r1), slice(c0, c1)
        edges = {
            "top": box[0].sum() if iy - r0 > need else -1,
            "bottom": box[-1].sum() if r1 - 1 - iy > need else -1,
            "left": box[:, 0].sum() if ix - c0 > need else -1,
            "right": box[:, -1].sum() if c1 - 1 - ix > need else -1,
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
    from orchestrator import dia  # heavy: imported in the worker only

    xs, ys = pixel_map(sci.wcs, tmpl.wcs, sci.data.shape)
    res = resample(tmpl.data, tmpl.variance, tmpl.mask, xs, ys)
    ix, iy = math.floor(sci.x + 0.5), math.floor(sci.y + 0.5)
    if res.outside[iy, ix]:
        raise NoOverlapError(
            f"{tmpl.row.path}: the template does not cover the object on the science grid "
            f"(coverage of the science cutout {res.coverage:.0%})"
        )
    # the largest box around the object that the template covers: masked strips would only
    # cost fit time (the core treats their footprints exactly) and carry no information
    h = config.psf_half_px
    need = config.kernel_half_width + h + 8
    rows, cols = covered_box(res.outside, iy, ix, need)
    sci = _crop(sci, rows, cols)
    t_image, t_power = res.image[rows, cols], res.noise_power[rows, cols]
    t_mask, t_outside = res.mask[rows, cols], res.outside[rows, cols]
    shape = sci.data.shape
    ix, iy = ix - cols.start, iy - rows.start
    jac = jacobian_at(sci.wcs, tmpl.wcs, sci.x, sci.y)
    psf_s = sci.psf.stamp(h)
    psf_t = tmpl.psf.stamp(h, jacobian=jac)
    # keep the object out of the kernel fit: a bright transient would otherwise pull the kernel
    r_ex = config.kernel_half_width + h + 3
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    exclude = (yy - sci.y) ** 2 + (xx - sci.x) ** 2 <= r_ex**2
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
    )
    dec = sub.decorrelate(sci.x, sci.y)
    # the science PSF rendered at the object's sub-pixel position (undersampled: sample the
    # effective PSF there, never phase-shift a pixel stamp)
    psf_at = sci.psf.stamp(h, sci.x - ix, sci.y - iy)
    psf_phot = photometry_psf(psf_at, psf_t, dec.filter, h + 3)
    enclosed = float(psf_phot.sum())
    # inpainted pixels (either image) are guesses: leave them out of the photometry
    flagged = ndimage.binary_dilation(sci.mask | t_mask)
    image = np.where(flagged, np.nan, dec.image)
    phot = dia.forced_photometry(image, dec.variance, psf_phot, float(ix), float(iy))
    return {
        "flux": phot.flux / enclosed,
        "flux_err": phot.flux_err / enclosed,
        "chi2_dof": phot.chi2_dof,
        "kernel_sum": sub.kernel_sum,
        "fit_chi2_dof": sub.stats.chi2_dof,
        "psf_fraction": enclosed,
        "backend": sub.backend,
        "n_flagged_in_stamp": int(
            flagged[max(0, iy - h - 3) : iy + h + 4, max(0, ix - h - 3) : ix + h + 4].sum()
        ),
        "_products": (dec.image, dec.variance, psf_phot / enclosed, sci),
    }


def empty_row(
    config: PipelineConfig, science: ExposureRow, template: ExposureRow
) -> dict[str, Any]:
    return {
        "oid": config.oid,
        "band": config.band,
        "mjd": science.mjd,
        "flux": math.nan,
        "flux_err": math.nan,
        "zpt": math.nan,
        "mag": math.nan,
        "mag_err": math.nan,
        "chi2_dof": math.nan,
        "pix_x": math.nan,
        "pix_y": math.nan,
        "science_path": str(science.path),
        "template_path": str(template.path),
        "science_pointing": science.pointing,
        "science_sca": science.sca,
        "template_pointing": template.pointing,
        "template_sca": template.sca,
        "success": False,
        "error": "",
        "kernel_sum": math.nan,
        "fit_chi2_dof": math.nan,
        "psf_fraction": math.nan,
        "n_flagged_in_stamp": -1,
        "backend": "",
        "notes": "",
        "elapsed_s": math.nan,
    }


def process_pair(
    config: PipelineConfig, science: ExposureRow, template: ExposureRow
) -> dict[str, Any]:
    """The light-curve row of one pair; failures become ``success = False`` with the message."""
    started = time.perf_counter()
    row = empty_row(config, science, template)
    try:
        half = config.cutout_px // 2
        sci = prepare(science, config, half)
        row["pix_x"] = sci.x + sci.origin[1]
        row["pix_y"] = sci.y + sci.origin[0]
        row["zpt"] = sci.zeropoint
        # the template cutout must hold the science cutout at any rotation, plus the kernel
        thalf = 0 if half == 0 else math.ceil(half * math.sqrt(2)) + 8
        tmpl = prepare(template, config, thalf)
        measured = subtract_pair(sci, tmpl, config)
        products = measured.pop("_products")
        cropped = products[-1]
        row.update(measured)
        row["notes"] = "; ".join(
            [f"science: {n}" for n in sci.notes] + [f"template: {n}" for n in tmpl.notes]
        )
        flux, err = row["flux"], row["flux_err"]
        if flux > 0 and math.isfinite(row["zpt"]):
            row["mag"] = row["zpt"] - 2.5 * math.log10(flux)
            row["mag_err"] = MAG_ERR_FACTOR * err / flux
        row["success"] = bool(math.isfinite(flux) and math.isfinite(err))
        if not row["success"]:
            row["error"] = "photometry gave a non-finite flux"
        if config.keep_products:
            _write_products(config, science, template, cropped, products[:3])
    except DiaError as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
    except MemoryError:
        row["error"] = "MemoryError: the pair does not fit in memory (use a smaller --cutout)"
    except Exception as exc:  # one bad pair must not stop the light curve; keep the traceback
        tb = traceback.format_exc(limit=4).strip().splitlines()
        row["error"] = f"{type(exc).__name__}: {exc} [{' | '.join(tb[-3:])}]"
    row["elapsed_s"] = time.perf_counter() - started
    return row


def product_stem(science: ExposureRow, template: ExposureRow) -> str:
    return f"{science.path.stem}__{template.path.stem}"


def _write_products(
    config: PipelineConfig,
    science: ExposureRow,
    template: ExposureRow,
    sci: Prepared,
    products: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    from orchestrator.dia.io import write_image

    folder = config.outdir / config.oid / "products"
    folder.mkdir(parents=True, exist_ok=True)
    stem = product_stem(science, template)
    diff, var, psf = products
    header = {
        "SCIENCE": science.path.name[:68],
        "TEMPLATE": template.path.name[:68],
        "ROW0": sci.origin[0],
        "COL0": sci.origin[1],
    }
    write_image(folder / f"{stem}_diff.fits", diff, header, sci.wcs)
    write_image(folder / f"{stem}_var.fits", var, header, sci.wcs)
    write_image(folder / f"{stem}_psf.fits", psf, header)


def worker_init(numba_threads: int) -> None:
    """Process-pool initializer: bound the threads each worker's libraries start."""
    for key in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(key, str(numba_threads))
