"""The Roman supernova photometry pipeline (phrosty's steps on the DIA core, CPU or GPU).

For every science x template pair of one band: read both exposures around the object, subtract
the sky, get each PSF (a given image, ``gaussian:FWHM``, or an effective PSF estimated from the
stars), resample the template onto the science grid through the two WCS, subtract
(:func:`orchestrator.dia.subtract`, cross-convolved with the pair's PSFs), decorrelate, and
measure the forced PSF flux at the object. One row per pair; a failing pair fails its own row.

Entry point: :func:`run`; the command line is ``orchestrator photometry run``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.dia.io import read_list
from orchestrator.dia.pipeline.pair import PipelineConfig, process_pair
from orchestrator.dia.pipeline.runner import (
    COLUMNS,
    Progress,
    iter_rows,
    lightcurve_path,
    pairs,
    plot_lightcurve,
    run_pairs,
    write_csv,
)

__all__ = ["COLUMNS", "PipelineConfig", "RunResult", "process_pair", "run"]


@dataclass(frozen=True)
class RunResult:
    rows: list[dict[str, Any]]
    csv_path: Path
    png_path: Path

    @property
    def n_failed(self) -> int:
        return sum(1 for r in self.rows if not r["success"])


def run(
    config: PipelineConfig,
    templates: Path,
    science: Path,
    *,
    base_path: Path | None = None,
    nprocs: int = 1,
    log: Any = None,
    progress: bool = True,
) -> RunResult:
    """Run every pair of the two lists (rows of ``config.band``) and write the light curve.

    Raises :class:`orchestrator.dia.io.ListFormatError` for a malformed list and
    :class:`orchestrator.dia.DiaInputError` when a list has no row of the band.
    """
    from orchestrator.dia.errors import DiaInputError

    tmpl_rows = read_list(templates, config.band, base_path)
    sci_rows = read_list(science, config.band, base_path)
    for name, path, rows in (("template", templates, tmpl_rows), ("science", science, sci_rows)):
        if not rows:
            raise DiaInputError(f"{path}: no {name} exposure of band {config.band}")
    work = pairs(sci_rows, tmpl_rows)
    if log is not None:
        log.info(
            "photometry_start",
            oid=config.oid,
            band=config.band,
            n_science=len(sci_rows),
            n_templates=len(tmpl_rows),
            n_pairs=len(work),
            nprocs=nprocs,
        )
    bar = Progress(len(work), log=log) if progress else None
    try:
        results = run_pairs(config, work, nprocs, on_done=bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    ordered = list(iter_rows(results))
    csv_path = lightcurve_path(config)
    write_csv(csv_path, ordered)
    png_path = csv_path.with_suffix(".png")
    plot_lightcurve(png_path, ordered, f"{config.oid}  {config.band}")
    return RunResult(ordered, csv_path, png_path)
