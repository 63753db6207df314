"""Runs every science x template pair (in parallel processes) and writes the light-curve CSV.

CSV columns (:data:`COLUMNS`): ``flux``/``flux_err`` are in the science image's own units and
``zpt`` is its AB zero point (``mag = zpt - 2.5 log10(flux)``); ``flux_njy``/``flux_njy_err``
put every row on one zero point, nJy (AB magnitude 31.4, see
:mod:`orchestrator.dia.pipeline.calibrate`). ``flag`` is a bitmask (0 = no quality flag raised)
with ``flag_reason`` saying why; ``nea`` is the noise-equivalent area of the PSF at the object
(pixels) and ``sky_rms`` the sky noise there (image units). ``psf_flux_err`` is the part of
``flux_err`` that estimated PSFs' own error adds (in quadrature; 0 with PSF files, see
:func:`orchestrator.dia.pipeline.measure.psf_error`). The plot is in
:mod:`~orchestrator.dia.pipeline.plot`, the Parquet copy in
:mod:`~orchestrator.dia.pipeline.snappl_lightcurve`.
"""

from __future__ import annotations

import csv
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, TextIO

from orchestrator.dia.io import ExposureRow
from orchestrator.dia.pipeline.calibrate import calibrated_flux
from orchestrator.dia.pipeline.config import PipelineConfig
from orchestrator.dia.pipeline.memory import tune_for_run
from orchestrator.dia.pipeline.pair import process_pair_rows, worker_init

COLUMNS = (
    "oid",
    "band",
    "mjd",
    "flux",
    "flux_err",
    "psf_flux_err",
    "flux_njy",
    "flux_njy_err",
    "zpt",
    "mag",
    "mag_err",
    "chi2_dof",
    "flag",
    "flag_reason",
    "pix_x",
    "pix_y",
    "nea",
    "sky_rms",
    "science_path",
    "template_path",
    "science_pointing",
    "science_sca",
    "template_pointing",
    "template_sca",
    "success",
    "error",
    "kernel_sum",
    "fit_chi2_dof",
    "psf_fraction",
    "n_flagged_in_stamp",
    "n_clipped",
    "backend",
    "notes",
    "elapsed_s",
)


def pairs(
    sciences: list[ExposureRow], templates: list[ExposureRow]
) -> list[tuple[ExposureRow, ExposureRow]]:
    """Every science with every template, science-major (a worker's cache then hits)."""
    return [(s, t) for s in sciences for t in templates]


def threads_per_process(nprocs: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, nprocs))


def _start_worker(numba_threads: int, parent_pid: int, keep_memory: bool = False) -> None:
    """Process-pool initializer: die with the parent, then bound the libraries' threads.

    A parent killed outright (SIGKILL, the OOM killer, a job's timeout) cannot stop its pool:
    without this its workers would go on computing whole-frame pairs for nobody. On Linux the
    kernel sends them SIGKILL when the parent dies (``PR_SET_PDEATHSIG``; the pool starts its
    workers from the thread that submits, which lives as long as the run).
    """
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent_pid:  # it died before the call above took effect
            os._exit(1)
    worker_init(numba_threads, keep_memory)


def run_pairs(
    config: PipelineConfig,
    work: list[tuple[ExposureRow, ExposureRow]],
    nprocs: int = 1,
    on_done: Callable[[dict[str, Any]], None] | None = None,
    keep_memory: bool = False,
) -> list[dict[str, Any]]:
    """Rows in the order of ``work`` (one per object of ``config`` for each pair); ``nprocs >
    1`` uses a spawn-context process pool.

    ``keep_memory``: the processes that run the pairs (this one, or the pool's workers) keep
    the memory they free and ask for no huge pages (a third of a whole-frame pair's time was
    the kernel handing out fresh pages; :mod:`orchestrator.dia.pipeline.memory`). Process-wide
    and never undone, so only a process that exists for the run asks for it (``photometry
    run``), not a caller that goes on with other work."""
    rows: list[list[dict[str, Any]] | None] = [None] * len(work)
    report = on_done or (lambda row: None)
    if nprocs <= 1 or len(work) <= 1:
        if keep_memory:
            tune_for_run()
        for i, (s, t) in enumerate(work):
            rows[i] = process_pair_rows(config, s, t)
            for row in rows[i] or []:
                report(row)
        return [r for pair_rows in rows if pair_rows for r in pair_rows]
    nthreads = threads_per_process(nprocs)
    # children read these at import time (numba fixes its pool size when first imported);
    # spawn children inherit the parent's environment, so set it before they start
    keys = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ["NUMBA_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(nthreads)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see orchestrator.dia.cli.run
    try:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=min(nprocs, len(work)),
            mp_context=ctx,
            initializer=_start_worker,
            initargs=(nthreads, os.getpid(), keep_memory),
        ) as pool:
            futures: dict[Future[list[dict[str, Any]]], int] = {
                pool.submit(process_pair_rows, config, s, t): i for i, (s, t) in enumerate(work)
            }
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    pair_rows = fut.result()
                except Exception as exc:  # a worker died (killed for memory, crashed)
                    from orchestrator.dia.pipeline.pair import empty_row

                    s, t = work[i]
                    pair_rows = [empty_row(config, s, t, oid) for oid, _, _ in config.objects]
                    for row in pair_rows:
                        row["error"] = f"worker failed: {type(exc).__name__}: {exc}"
                rows[i] = pair_rows
                for row in pair_rows:
                    report(row)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return [r for pair_rows in rows if pair_rows for r in pair_rows]


# keys a row may lack (rows from before the quality flags, NEA and sky noise were measured)
ROW_DEFAULTS: dict[str, Any] = {
    "nea": math.nan,
    "sky_rms": math.nan,
    "psf_flux_err": math.nan,
    "flag": 0,
    "flag_reason": "",
}


def complete_row(row: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``row`` with the missing optional keys filled and the fluxes in nJy added."""
    out = {**ROW_DEFAULTS, **row}
    out["flux_njy"], out["flux_njy_err"] = calibrated_flux(out["flux"], out["flux_err"], out["zpt"])
    return out


def lightcurve_path(config: PipelineConfig) -> Path:
    return config.outdir / config.oid / f"{config.oid}_{config.band}_lightcurve.csv"


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):  # numpy floats too (repr would say np.float64(...))
        return "nan" if math.isnan(value) else repr(float(value))
    return str(value)


def write_csv(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([_fmt(r.get(c, "")) for c in COLUMNS])
    tmp.replace(path)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


class Progress:
    """A progress bar on a TTY (rich when installed, else a plain one); log lines otherwise."""

    def __init__(self, total: int, stream: TextIO | None = None, log: Any = None) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.stream = stream or sys.stderr
        self.log = log
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self._rich: Any = None
        if self.tty:
            try:
                from rich.progress import Progress as RichProgress

                self._rich = RichProgress(transient=False)
                self._rich.start()
                self._task = self._rich.add_task("pairs", total=total)
            except ImportError:
                self._rich = None

    def update(self, row: dict[str, Any]) -> None:
        self.done += 1
        self.failed += 0 if row["success"] else 1
        if self._rich is not None:
            self._rich.update(self._task, advance=1)
        elif self.tty:
            width = 30
            filled = int(width * self.done / max(1, self.total))
            self.stream.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} pairs, "
                f"{self.failed} failed, {time.monotonic() - self.started:.0f} s"
            )
            self.stream.flush()
        if self.log is not None:
            event = self.log.info if row["success"] else self.log.warning
            if not self.tty:
                event(
                    "pair_done",
                    science=Path(row["science_path"]).name,
                    template=Path(row["template_path"]).name,
                    success=row["success"],
                    flux=row["flux"],
                    flux_err=row["flux_err"],
                    error=row["error"] or None,
                    elapsed_s=round(row["elapsed_s"], 2),
                    done=self.done,
                    total=self.total,
                )
            elif not row["success"]:
                self._clear()
                event(
                    "pair_failed",
                    science=Path(row["science_path"]).name,
                    template=Path(row["template_path"]).name,
                    error=row["error"],
                )

    def _clear(self) -> None:
        if self.tty and self._rich is None:
            self.stream.write("\r" + " " * 80 + "\r")

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
        elif self.tty:
            self.stream.write("\n")
            self.stream.flush()


def iter_rows(rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield from sorted(rows, key=lambda r: (r["mjd"], r["template_path"]))
