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
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.dia.errors import DiaError
from orchestrator.dia.io import ExposureRow, FitsImage, ImageReadError, read_psf_image
from orchestrator.dia.pipeline import quality, roman_ee
from orchestrator.dia.pipeline.background import background, estimate_variance, inpaint
from orchestrator.dia.pipeline.config import PipelineConfig, Prepared
from orchestrator.dia.pipeline.measure import NoOverlapError, subtract_group
from orchestrator.dia.pipeline.psf import PsfModel, parse_psf_option
from orchestrator.dia.pipeline.psf_stars import CORE_HALF_PX, estimate_psf

MAG_ERR_FACTOR = 2.5 / math.log(10)  # 1.0857


def _box(centre: float, half: int, n: int) -> slice:
    if half <= 0:
        return slice(0, n)
    c = math.floor(centre + 0.5)
    return slice(max(0, c - half), min(n, c + half + 1))


# Prepared exposures kept per process (science-major order: the current science and every
# template hit). Bounded by count and by size: whole 4088^2 frames take 285 MB each, and eight
# of them would double a whole-frame run's memory.
CACHE_ENTRIES = 8
CACHE_BYTES = 1_000_000_000
_cache: OrderedDict[tuple[ExposureRow, PipelineConfig, int, float], Prepared] = OrderedDict()


def _nbytes(p: Prepared) -> int:
    return int(p.data.nbytes + p.variance.nbytes + p.mask.nbytes)


def prepare(row: ExposureRow, config: PipelineConfig, half: int, grow: float = 1.0) -> Prepared:
    """:func:`prepare_exposure`, cached per process (least recently used first out, at most
    :data:`CACHE_ENTRIES` and about :data:`CACHE_BYTES`; the newest is always kept)."""
    key = (row, config, half, grow)
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    value = prepare_exposure(row, config, half, grow)
    _cache[key] = value
    total = sum(_nbytes(p) for p in _cache.values())
    while len(_cache) > 1 and (len(_cache) > CACHE_ENTRIES or total > CACHE_BYTES):
        _, old = _cache.popitem(last=False)
        total -= _nbytes(old)
    return value


def prepare_exposure(
    row: ExposureRow, config: PipelineConfig, half: int, grow: float = 1.0
) -> Prepared:
    """Read, cut out (``2 half + 1`` around the object; 0 = whole image; with further objects
    around their box, ``half`` grown by ``grow`` times the box's half-extent), subtract the
    sky, estimate the noise when the file has none, and get the PSF."""
    if not row.path.exists():
        raise ImageReadError(f"{row.path}: no such file (listed at {row.source})")
    with FitsImage(row.path, config.zeropoint_key) as img:
        ny, nx = img.shape
        x, y, extent = _centre(img, config, nx, ny, row)
        if half > 0:
            half += math.ceil(extent * grow)  # the cutout covers every object
        cut = img.read(_box(y, half, ny), _box(x, half, nx))
        psf, notes = _psf_for(row, config, img, x, y)
    bkg = background(cut.data, cut.mask, config.background_box_px)
    data = cut.data - bkg
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


def _centre(
    img: FitsImage, config: PipelineConfig, nx: int, ny: int, row: ExposureRow
) -> tuple[float, float, int]:
    """Where the cutout goes: the object's pixel, or with further objects the centre of the
    box around those on the image, and how far that box reaches beyond its centre."""
    points = [img.world_to_pixel(ra, dec) for _, ra, dec in config.objects]
    on = [(x, y) for x, y in points if -0.5 <= x <= nx - 0.5 and -0.5 <= y <= ny - 0.5]
    if not on:
        x, y = points[0]
        what = (
            f"the object (RA {config.ra}, Dec {config.dec}) falls"
            if not config.others
            else f"none of the {len(points)} objects falls inside it; the first"
        )
        raise NoOverlapError(
            f"{row.path}: {what} outside the image, at pixel ({x:.1f}, {y:.1f}) of {nx} x {ny}"
        )
    if len(on) == 1:
        return on[0][0], on[0][1], 0
    xs, ys = [p[0] for p in on], [p[1] for p in on]
    extent = math.ceil(max(max(xs) - min(xs), max(ys) - min(ys)) / 2)
    return (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, extent


def _psf_for(
    row: ExposureRow, config: PipelineConfig, img: FitsImage, x: float, y: float
) -> tuple[PsfModel, list[str]]:
    """The exposure's PSF model and notes for its row (how the PSF was scaled or estimated)."""
    spec = config.psf
    if spec is not None:
        kind, value = parse_psf_option(spec)
        if kind == "gaussian":
            return PsfModel.gaussian(float(value), half_px=config.psf_half_px + 2), []
        return _from_file(Path(str(value)))
    if row.psf_path is not None:
        return _from_file(row.psf_path)
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
        half_psf = min(config.psf_half_px, 10)
        model = estimate_psf(
            data,
            var,
            region.mask,
            half=half_psf,
            encircled_energy=None
            if config.psf_wings == "stars"
            else roman_ee.stamp_fraction(config.band, CORE_HALF_PX),
        )
    except DiaError as exc:
        raise type(exc)(f"{row.path}: {exc}") from exc
    return model, [model.note] if model.note else []


def _from_file(path: Path) -> tuple[PsfModel, list[str]]:
    image = read_psf_image(path)
    return PsfModel.from_file(image), [image.note] if image.note else []


def empty_row(
    config: PipelineConfig, science: ExposureRow, template: ExposureRow, oid: str | None = None
) -> dict[str, Any]:
    return {
        "oid": oid or config.oid,
        "band": config.band,
        "mjd": science.mjd,
        "flux": math.nan,
        "flux_err": math.nan,
        "psf_flux_err": math.nan,
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
        "n_clipped": -1,
        "nea": math.nan,
        "sky_rms": math.nan,
        "flag": 0,
        "flag_reason": "",
        "backend": "",
        "notes": "",
        "elapsed_s": math.nan,
    }


def process_pair(
    config: PipelineConfig, science: ExposureRow, template: ExposureRow
) -> dict[str, Any]:
    """The light-curve row of one pair; failures become ``success = False`` with the message."""
    return process_pair_rows(config, science, template)[0]


def process_pair_rows(
    config: PipelineConfig, science: ExposureRow, template: ExposureRow
) -> list[dict[str, Any]]:
    """One row per object of ``config`` (itself, then ``others``), all measured on one
    subtraction of the pair; a failure fails the rows it concerns, with the message."""
    started = time.perf_counter()
    rows = [empty_row(config, science, template, oid) for oid, _, _ in config.objects]
    try:
        half = config.cutout_px // 2
        sci = prepare(science, config, half)
        # the template cutout must hold the science cutout at any rotation, plus the kernel
        thalf = 0 if half == 0 else math.ceil(half * math.sqrt(2)) + 8
        tmpl = prepare(template, config, thalf, grow=math.sqrt(2))
        positions = _positions(sci, config)
        for row, at in zip(rows, positions, strict=True):
            row["zpt"] = sci.zeropoint
            if at is None:
                row["error"] = "NoOverlapError: the object falls outside the science image"
                continue
            row["pix_x"], row["pix_y"] = at[0] + sci.origin[1], at[1] + sci.origin[0]
        on = [i for i, at in enumerate(positions) if at is not None]
        measured = subtract_group(sci, tmpl, config, [positions[i] for i in on])  # type: ignore[misc]
        for i, m in zip(on, measured, strict=True):
            if isinstance(m, DiaError):
                rows[i]["error"] = f"{type(m).__name__}: {m}"
            else:
                _fill(rows[i], m, sci, tmpl, config, science, template)
    except DiaError as exc:
        _fail(rows, f"{type(exc).__name__}: {exc}")
    except MemoryError:
        _fail(rows, "MemoryError: the pair does not fit in memory (use a smaller --cutout)")
    except Exception as exc:  # one bad pair must not stop the light curve; keep the traceback
        tb = traceback.format_exc(limit=4).strip().splitlines()
        _fail(rows, f"{type(exc).__name__}: {exc} [{' | '.join(tb[-3:])}]")
    elapsed = time.perf_counter() - started
    for row in rows:
        row["elapsed_s"] = elapsed
    return rows


def _positions(sci: Prepared, config: PipelineConfig) -> list[tuple[float, float] | None]:
    """Each object's position in the science cutout (None off it): the object's own for one,
    else from the cutout's WCS."""
    if not config.others:
        return [(sci.x, sci.y)]
    ny, nx = sci.data.shape
    out: list[tuple[float, float] | None] = []
    for _, ra, dec in config.objects:
        x, y = (float(v) for v in sci.wcs.all_world2pix([[ra, dec]], 0)[0])
        out.append((x, y) if -0.5 <= x <= nx - 0.5 and -0.5 <= y <= ny - 0.5 else None)
    return out


def _fail(rows: list[dict[str, Any]], message: str) -> None:
    for row in rows:
        if not row["success"] and not row["error"]:
            row["error"] = message


def _fill(
    row: dict[str, Any],
    measured: dict[str, Any],
    sci: Prepared,
    tmpl: Prepared,
    config: PipelineConfig,
    science: ExposureRow,
    template: ExposureRow,
) -> None:
    """One object's row from its measured columns: quality flags, notes, magnitude, success."""
    products = measured.pop("_products")
    cropped = products[-1]
    clipped_w, masked_w = measured.pop("clipped_weight"), measured.pop("masked_weight")
    row.update(measured)
    row["flag"], row["flag_reason"] = quality.assess(
        chi2_dof=row["chi2_dof"],
        clipped_weight=clipped_w,
        masked_weight=masked_w,
        kernel_sum=row["kernel_sum"],
        zpt_science=sci.zeropoint,
        zpt_template=tmpl.zeropoint,
    )
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
        _write_products(config, science, template, cropped, products[:3], row["oid"])


def product_stem(science: ExposureRow, template: ExposureRow) -> str:
    return f"{science.path.stem}__{template.path.stem}"


def _write_products(
    config: PipelineConfig,
    science: ExposureRow,
    template: ExposureRow,
    sci: Prepared,
    products: tuple[np.ndarray, np.ndarray, np.ndarray],
    oid: str,
) -> None:
    from orchestrator.dia.io import write_image

    folder = config.outdir / oid / "products"
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


def worker_init(numba_threads: int, keep_memory: bool = False) -> None:
    """Process-pool initializer: bound the threads each worker's libraries start; with
    ``keep_memory`` (a worker that exists for the run) keep the memory it frees and ask for no
    huge pages (:mod:`orchestrator.dia.pipeline.memory`)."""
    for key in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(key, str(numba_threads))
    if keep_memory:
        from orchestrator.dia.pipeline.memory import tune_for_run

        tune_for_run()
