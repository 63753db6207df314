"""The Roman supernova photometry pipeline (phrosty's steps on the DIA core, CPU or GPU).

For every science x template pair of one band: read both exposures around the object, subtract
the sky, get each PSF (a given image, ``gaussian:FWHM``, or an effective PSF estimated from the
stars), resample the template onto the science grid through the two WCS, subtract
(:func:`orchestrator.dia.subtract`, cross-convolved with the pair's PSFs), decorrelate, and
measure the forced PSF flux at the object. One row per pair; a failing pair fails its own row.

Outputs under ``OUTDIR/OID/``: ``OID_BAND_lightcurve.csv`` (:data:`COLUMNS`), the same rows as
``OID_BAND_lightcurve.parquet`` in the Roman SN PIT's light-curve schema
(:mod:`~orchestrator.dia.pipeline.snappl_lightcurve`; needs pyarrow, the ``photometry`` extra,
and is skipped with a warning without it) and ``OID_BAND_lightcurve.png``
(:mod:`~orchestrator.dia.pipeline.plot`, with the truth when a truth table is given).

Entry point: :func:`run`; the command line is ``orchestrator photometry run``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.dia.io import read_list
from orchestrator.dia.pipeline.config import PipelineConfig
from orchestrator.dia.pipeline.pair import process_pair
from orchestrator.dia.pipeline.plot import plot_lightcurve
from orchestrator.dia.pipeline.runner import (
    COLUMNS,
    Progress,
    complete_row,
    iter_rows,
    lightcurve_path,
    pairs,
    run_pairs,
    write_csv,
)
from orchestrator.dia.pipeline.snappl_lightcurve import parquet_path, write_lightcurve_parquet
from orchestrator.dia.pipeline.truth import TruthTable

__all__ = ["COLUMNS", "PipelineConfig", "RunResult", "process_pair", "run"]


@dataclass(frozen=True)
class RunResult:
    rows: list[dict[str, Any]]
    csv_path: Path
    png_path: Path
    parquet_path: Path | None = None  # None when pyarrow is missing
    others: tuple[RunResult, ...] = ()  # the further objects' (PipelineConfig.others)

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
    truth: TruthTable | None = None,
    keep_memory: bool = False,
) -> RunResult:
    """Run every pair of the two lists (rows of ``config.band``) and write the light curve
    (CSV, Parquet, PNG; ``truth`` is drawn on the plot). ``keep_memory``: see
    :func:`orchestrator.dia.pipeline.runner.run_pairs` (``photometry run`` sets it).

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
    bar = Progress(len(work) * len(config.objects), log=log) if progress else None
    try:
        results = run_pairs(
            config, work, nprocs, on_done=bar.update if bar else None, keep_memory=keep_memory
        )
    finally:
        if bar:
            bar.close()
    out = []
    for oid, ra, dec in config.objects:  # one light curve per object, itself first
        one = dataclasses.replace(config, oid=oid, ra=ra, dec=dec, others=())
        mine = [r for r in results if r["oid"] == oid]
        out.append(_write_outputs(one, mine, truth if oid == config.oid else None, log))
    first, *others = out
    return dataclasses.replace(first, others=tuple(others))


def _write_outputs(
    config: PipelineConfig, rows: list[dict[str, Any]], truth: TruthTable | None, log: Any
) -> RunResult:
    ordered = [complete_row(r) for r in iter_rows(rows)]
    csv_path = lightcurve_path(config)
    write_csv(csv_path, ordered)
    pq_path = _write_parquet(parquet_path(csv_path), ordered, config, log)
    png_path = csv_path.with_suffix(".png")
    plot_lightcurve(png_path, ordered, f"{config.oid}  {config.band}", truth=truth)
    return RunResult(ordered, csv_path, png_path, pq_path)


def _write_parquet(
    path: Path, rows: list[dict[str, Any]], config: PipelineConfig, log: Any
) -> Path | None:
    """The Parquet light curve, or None (logged) when pyarrow is missing."""
    try:
        return write_lightcurve_parquet(
            path, rows, COLUMNS, oid=config.oid, band=config.band, ra=config.ra, dec=config.dec
        )
    except ImportError as exc:  # pyarrow is in the optional `photometry` extra
        if log is not None:
            log.warning(
                "parquet_skipped",
                reason=str(exc),
                hint="pip install 'orchestrator[photometry]' for the Parquet light curve",
            )
        return None
