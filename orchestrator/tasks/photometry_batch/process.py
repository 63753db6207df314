"""One measurement process of a batch: a group of tasks (objects on the same images, or one
object) through ``photometry run`` (the builtin core: one subtraction per image pair for the
whole group, ``--also`` for the others), or one task through phrosty's container; its resource
use (``wait4`` of that child) and its light curves read back into each task's result."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.tasks.photometry_batch.phrosty import phrosty_command, phrosty_output, read_back
from orchestrator.tasks.photometry_batch.plan import Task
from orchestrator.tasks.photometry_batch.records import Layout, TaskResult, count_rows
from orchestrator.tasks.photometry_batch.spec import BuiltinPipeline, Pipeline

EXIT_FAILED_ROWS = 1  # photometry run: the light curve is written, some epochs failed


def command(tasks: list[Task], pipeline: BuiltinPipeline, outdir: Path) -> list[str]:
    """The ``photometry run`` command line of a group of tasks: the first task's object, the
    others' with ``--also`` (one subtraction per image pair for all of them)."""
    first, *others = tasks
    argv = [
        sys.executable,
        "-m",
        "orchestrator.dia.cli",
        "run",
        *("--oid", first.oid, "-r", repr(first.ra), "-d", repr(first.dec), "-b", first.band),
        *("-t", str(first.templates), "-s", str(first.science), "-o", str(outdir)),
        *("-p", str(pipeline.nprocs), "--backend", pipeline.backend),
        *("--cutout", str(pipeline.cutout), "--log-level", "warning"),
    ]
    for other in others:
        argv += ["--also", other.oid, repr(other.ra), repr(other.dec)]
    if pipeline.kernel_half_width is not None:
        argv += ["--kernel-half-width", str(pipeline.kernel_half_width)]
    if pipeline.psf_wings is not None:
        argv += ["--psf-wings", pipeline.psf_wings]
    return argv


def measure(
    tasks: list[Task], pipeline: Pipeline, layout: Layout, threads: int, fallback: bool
) -> list[TaskResult]:
    """One process for ``tasks`` (a group on the same images; phrosty: one task), in the first
    task's folder and scratch folder; one result per task, in order. ``fallback``: the builtin
    core on the CPU, whatever the pipeline."""
    first = tasks[0]
    folder = layout.task_dir(first)
    scratch = layout.scratch_dir / first.key
    folder.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = dict(os.environ)
    env.update(
        TMPDIR=str(scratch),
        NUMBA_NUM_THREADS=str(threads),
        OMP_NUM_THREADS=str(threads),
        ORCH_LOG_FORMAT="json",
    )
    started = time.monotonic()
    run = TaskResult(oid=first.oid, band=first.band, state="failed")
    phrosty = None if fallback else pipeline.phrosty
    try:
        if phrosty is not None:
            argv, env = phrosty_command(first, phrosty, folder, scratch, env)
        else:
            builtin = pipeline.builtin
            if fallback:  # the fallback resources have no GPU
                builtin = builtin.model_copy(update={"backend": "cpu"})
            argv = command(tasks, builtin, folder)
        with (folder / "task.log").open("wb") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=scratch,
            )
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        run.exit_code = proc.returncode
        run.peak_mb = round(usage.ru_maxrss / 1024.0, 1)  # Linux: kilobytes
    except (OSError, ValueError) as exc:  # ValueError: a mount the runtime cannot express
        what = "phrosty" if phrosty is not None else "photometry run"
        run.error = f"could not start {what}: {exc}"
    finally:
        run.wall_s = round(time.monotonic() - started, 2)
        shutil.rmtree(scratch, ignore_errors=True)
    if phrosty is not None:
        return [_finish_phrosty(first, folder, layout, run)]
    return [_finish_builtin(task, tasks, folder, layout, run) for task in tasks]


def _finish_builtin(
    task: Task, group: list[Task], folder: Path, layout: Layout, run: TaskResult
) -> TaskResult:
    """One task's result from its group's process: its light curve, the process's figures."""
    result = TaskResult(
        oid=task.oid,
        band=task.band,
        state="failed",
        wall_s=run.wall_s,
        peak_mb=run.peak_mb,
        exit_code=run.exit_code,
        error=run.error,
        measured_with=",".join(t.oid for t in group if t is not task),
    )
    lightcurve = folder / task.oid / f"{task.oid}_{task.band}_lightcurve.csv"
    if result.exit_code in (0, EXIT_FAILED_ROWS) and lightcurve.is_file():
        if _take(result, lightcurve, layout):
            return result
        result.error = f"no epoch measured: {_first_row_error(lightcurve)}"
    return _explained(result, folder)


def _finish_phrosty(task: Task, folder: Path, layout: Layout, result: TaskResult) -> TaskResult:
    """phrosty's light curve read back (whatever its exit status: with ``--catchfailures`` it
    writes the epochs it measured); measured when at least one epoch succeeded."""
    parquet = phrosty_output(folder, task)
    if parquet is not None:
        try:
            lightcurve = read_back(folder, task, parquet)
        except (OSError, ValueError) as exc:  # pyarrow's errors are ValueError/OSError
            result.error = f"cannot read phrosty's light curve {parquet}: {exc}"
            return result
        if _take(result, lightcurve, layout):
            return result
        result.error = "no epoch measured: phrosty's light curve has no successful row"
    return _explained(result, folder)


def _take(result: TaskResult, lightcurve: Path, layout: Layout) -> bool:
    """The light curve's counts into ``result``; True (measured) when an epoch succeeded (a
    bad image fails its rows, not the object)."""
    result.lightcurve = str(lightcurve)
    result.epochs_measured, result.epochs_failed, result.backend = count_rows(lightcurve)
    if result.epochs_measured:
        result.state = "measured"
        result.measured_in_run = layout.run_id
    return bool(result.epochs_measured)


def _explained(result: TaskResult, folder: Path) -> TaskResult:
    """A failed result with a reason: its own, else the last error of the task's log."""
    if not result.error:
        result.error = _last_error(folder / "task.log", result.exit_code)
    return result


def _first_row_error(lightcurve: Path) -> str:
    with lightcurve.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("error"):
                return row["error"][:300]
    return "every epoch failed"


def _last_error(log: Path, code: int | None) -> str:
    """The task's own explanation: the last error line of its log, else its exit status."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in reversed(lines):
        text = line.strip()
        if not text:
            continue
        try:
            record = json.loads(text)
        except ValueError:
            return text[-300:]
        if isinstance(record, dict) and record.get("level") in ("error", "critical"):
            return str(record.get("error") or record.get("event"))[-300:]
    if code is not None and code < 0:
        return f"killed by signal {-code}"
    return f"photometry run exited {code} without a light curve"
