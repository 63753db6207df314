"""``orchestrator photometry``: the Roman supernova photometry pipeline on the command line.

The group imports nothing numerical at module level (only click); ``run`` and ``simulate``
import the pipeline when invoked. Register it with ``main.add_command(photometry)``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from orchestrator.dia.cli_inputs import check_also, check_options, object_from, truth_table
from orchestrator.dia.cli_simulate import simulate_command

if TYPE_CHECKING:
    pass

EXIT_OK, EXIT_FAILED_ROWS, EXIT_USAGE = 0, 1, 2

RUN_HELP = """Forced photometry light curve of one object from Roman images (phrosty's steps).

Every template of band BAND in TEMPLATES is paired with every science exposure of that band in
SCIENCE. Per pair: sky subtraction, PSF (--psf, else the list's psf column, else estimated from
bright isolated stars as an oversampled effective PSF), resampling of the template onto the
science grid through the two WCS, subtraction (cross-convolved SFFT-style kernel fit), decorrelation
and forced PSF photometry at the object.

\b
Lists: whitespace-separated, header `path pointing sca mjd band` (+ optional `psf`), paths
relative to --base-path, else to the list's folder. Images: FITS, pixels in a SCI extension or
the primary HDU, optional ERR or VAR and DQ (non-zero = bad) extensions, celestial WCS, zero
point in ZPTMAG or MAGZP (or --zeropoint-key).

\b
Output: OUTDIR/OID/OID_BAND_lightcurve.csv (one row per pair; flux in the science image's
units, corrected for the PSF flux outside the fitted stamp, and flux_njy in nJy: every image
put on the AB zero point 31.4, the AB magnitude of 1 nJy, using its zpt), the same rows as
OID_BAND_lightcurve.parquet in the Roman SN PIT light-curve schema (snappl's: mjd flux flux_err
zpt NEA sky_rms observation_id sca pix_x pix_y, then the other columns; needs pyarrow, from the
`photometry` extra), and a .png plot of the nJy flux (flagged rows hollow grey, the truth as a
line with --truth, or a truth.csv beside --object); --keep-products writes difference,
variance and PSF images under OUTDIR/OID/products/.

\b
Cutouts: each pair is processed on a --cutout square around the object (default 512 pixels);
--cutout 0 uses whole detectors, which is slower on a CPU and needs far more memory.
Peak memory per process: about 0.55 GB for a pair with the default 512-pixel cutout (about
1.5 s a pair on 2 CPU cores), and 2.9 GB for a whole 4088 x 4088 pair (--cutout 0; about 10 s a
pair on 2 cores, half of it the subtraction). Measured on `photometry simulate` data with
benchmarks/photometry_stages.py and /usr/bin/time (2026-11-29); plan -p by memory and cores:
each process gets the cores divided by -p.

\b
Exit status: 0 every pair succeeded, 1 some pairs failed (their rows say why), 2 usage error.

\b
Example:
  orchestrator photometry simulate --out data
  orchestrator photometry run --object data/object.json \\
      --templates data/templates.txt --science data/science.txt --outdir lc
"""


@click.group(
    name="photometry",
    context_settings={"help_option_names": ["-h", "--help"]},
)
def photometry() -> None:
    """Roman supernova photometry: difference imaging and forced photometry (CPU or GPU)."""


@photometry.command("run", help=RUN_HELP)
@click.option(
    "--object",
    "object_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="JSON with oid, ra, dec, band (as `photometry simulate` writes); flags override it.",
)
@click.option(
    "--truth",
    "truth_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Truth table to draw on the plot: CSV with science_path (relative to its folder), "
    "true_flux (image units) and zpt, as `photometry simulate` writes truth.csv "
    "[default: truth.csv beside --object, when there].",
)
@click.option("--oid", default=None, help="Object id (names the output folder and files).")
@click.option("-r", "--ra", type=float, default=None, help="Right ascension, degrees.")
@click.option("-d", "--dec", type=float, default=None, help="Declination, degrees.")
@click.option(
    "-b", "--band", default=None, help="Band, e.g. R062; rows of other bands are skipped."
)
@click.option(
    "-t",
    "--templates",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="List of template exposures.",
)
@click.option(
    "-s",
    "--science",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="List of science exposures.",
)
@click.option(
    "-o",
    "--outdir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Output folder (OUTDIR/OID/... is written).",
)
@click.option(
    "--base-path",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder the lists' relative paths start from [default: each list's folder].",
)
@click.option(
    "-p",
    "--nprocs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Pairs processed in parallel (processes; each gets cores/N numba threads).",
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "cpu", "gpu"]),
    default="auto",
    show_default=True,
    help="Subtraction backend; auto = GPU when CuPy sees one.",
)
@click.option(
    "--kernel-half-width",
    type=click.IntRange(min=0),
    default=9,
    show_default=True,
    help="Kernel half-width w (the kernel is 2w+1 square).",
)
@click.option(
    "--kernel-poly-order",
    type=click.IntRange(0, 4),
    default=2,
    show_default=True,
    help="Polynomial order of the kernel's spatial variation.",
)
@click.option(
    "--background-poly-order",
    type=click.IntRange(0, 4),
    default=0,
    show_default=True,
    help="Polynomial order of the differential background.",
)
@click.option(
    "--psf",
    "psf",
    default=None,
    metavar="FILE|gaussian:FWHM",
    help="PSF for every exposure: a PSF image (OVERSAMP keyword) or an analytic "
    "Gaussian of FWHM pixels [default: the list's psf column, else estimated from stars].",
)
@click.option(
    "--psf-wings",
    type=click.Choice(["auto", "roman", "stars"]),
    default="auto",
    show_default=True,
    help="Scale of PSFs estimated from stars: the Roman PSF's encircled energy for the band "
    "(roman), or the stars' curve of growth (stars; for non-Roman optics, e.g. the "
    "simulator's); auto = roman for a Roman band.",
)
@click.option(
    "--cutout",
    "cutout_px",
    type=click.IntRange(min=0),
    default=512,
    show_default=True,
    help="Side in pixels of the science cutout around the object; 0 = whole image.",
)
@click.option(
    "--zeropoint-key",
    default=None,
    help="Header keyword of the magnitude zero point [default: ZPTMAG, then MAGZP].",
)
@click.option("--keep-products", is_flag=True, help="Write difference, variance and PSF images.")
@click.option(
    "--also",
    "also",
    type=(str, float, float),
    multiple=True,
    metavar="OID RA DEC",
    help="Another object on the same images, measured on the same subtraction of each pair "
    "(repeatable); each gets its own light curve under OUTDIR/OID/.",
)
@click.option("--log-level", default="info", show_default=True, help="debug, info, warning, error.")
def run_command(
    object_file: Path | None,
    truth_file: Path | None,
    oid: str | None,
    ra: float | None,
    dec: float | None,
    band: str | None,
    templates: Path,
    science: Path,
    outdir: Path,
    base_path: Path | None,
    nprocs: int,
    backend: str,
    kernel_half_width: int,
    kernel_poly_order: int,
    background_poly_order: int,
    psf: str | None,
    psf_wings: str,
    cutout_px: int,
    zeropoint_key: str | None,
    keep_products: bool,
    also: tuple[tuple[str, float, float], ...],
    log_level: str,
) -> None:
    from orchestrator.logs import configure_logging, get_logger

    oid, ra, dec, band = object_from(object_file, oid, ra, dec, band)
    # OpenBLAS's idle threads spin after each call and take the cores the FFTs and numba
    # kernels need: one BLAS thread made a whole 4088^2 pair 17.2 s -> 14.4 s on two cores
    # (benchmarks/photometry_stages.py); pool workers get it from the environment (runner)
    if "OPENBLAS_NUM_THREADS" not in os.environ:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="blas")
    configure_logging(log_level)
    log = get_logger(oid=oid, band=band)
    check_options(dec, psf, cutout_px, kernel_half_width, backend)
    check_also(oid, also)
    truth = truth_table(truth_file, object_file, log)
    from orchestrator.dia.pipeline import roman_ee

    if psf_wings == "roman" and roman_ee.stamp_fraction(band, 4) is None:
        raise click.BadParameter(
            f"no Roman encircled-energy table for band {band!r} "
            f"(bands: {', '.join(roman_ee.ENCIRCLED_ENERGY)})",
            param_hint="--psf-wings",
        )

    from orchestrator.dia.errors import DiaInputError
    from orchestrator.dia.pipeline import PipelineConfig
    from orchestrator.dia.pipeline import run as run_pipeline

    config = PipelineConfig(
        oid=oid,
        ra=ra % 360.0,
        dec=dec,
        band=band,
        outdir=outdir,
        backend=backend,
        kernel_half_width=kernel_half_width,
        kernel_poly_order=kernel_poly_order,
        background_poly_order=background_poly_order,
        psf=psf,
        psf_wings=psf_wings,
        cutout_px=cutout_px,
        zeropoint_key=zeropoint_key,
        keep_products=keep_products,
        others=tuple((o, r % 360.0, d) for o, r, d in also),
    )
    try:
        result = run_pipeline(
            config,
            templates,
            science,
            base_path=base_path,
            nprocs=nprocs,
            log=log,
            truth=truth,
            keep_memory=True,  # this process exists for the run (pipeline/memory.py)
        )
    except DiaInputError as exc:
        click.echo(f"orchestrator photometry run: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    log.info(
        "photometry_done",
        lightcurve=str(result.csv_path),
        parquet=str(result.parquet_path) if result.parquet_path else None,
        plot=str(result.png_path),
        n_pairs=len(result.rows),
        n_failed=result.n_failed,
    )
    for other in result.others:
        log.info(
            "photometry_done",
            oid=other.rows[0]["oid"] if other.rows else None,
            lightcurve=str(other.csv_path),
            n_pairs=len(other.rows),
            n_failed=other.n_failed,
        )
    failed = result.n_failed + sum(o.n_failed for o in result.others)
    sys.exit(EXIT_FAILED_ROWS if failed else EXIT_OK)


photometry.add_command(simulate_command)


def main() -> None:
    """``python -m orchestrator.dia.cli`` (the same commands without the main CLI)."""
    photometry(prog_name="photometry")


if __name__ == "__main__":
    main()
