"""Run a batch's tasks on this machine: a bounded pool, one ``photometry run`` process each.

One process per task (not one per batch): a task that crashes, runs out of memory or is killed
fails alone, its memory goes back when it ends, and its wall time and peak memory are its own
(``wait4``'s resource use of that child). Each task writes into its own folder of the run's
output (``tasks/<oid>_<band>/``, its log beside) and keeps its temporary files in its own
scratch folder (``TMPDIR`` points there), removed when it ends: parallel tasks never share one
(the PIT's users met phrosty runs clobbering a shared temporary directory).

A task whose fingerprint matches the last success of the same object and band (``done/KEY.json``
in the job's output folder) is not run: its result is that earlier one, linked into this run.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator import atomic
from orchestrator.tasks.photometry_batch.phrosty import phrosty_command, phrosty_output, read_back
from orchestrator.tasks.photometry_batch.plan import Task
from orchestrator.tasks.photometry_batch.spec import BuiltinPipeline, Pipeline

DONE_DIR = "done"  # OUTPUT_DIR/JOB/done/KEY.json: the last success of each object and band
RESULT_FILE = "result.json"  # tasks/KEY/result.json: the task's row of the summary
EXIT_FAILED_ROWS = 1  # photometry run: the light curve is written, some epochs failed


@dataclass
class TaskResult:
    """One task's outcome: the summary table's row."""

    oid: str
    band: str
    # measured (at least one epoch) | skipped (unchanged since its last success) | failed |
    # invalid (not run: its row, lists or images are not usable)
    state: str
    epochs_measured: int = 0
    epochs_failed: int = 0
    backend: str = ""
    wall_s: float = 0.0
    peak_mb: float = 0.0
    exit_code: int | None = None
    error: str = ""
    lightcurve: str = ""
    measured_in_run: str = ""  # the run that measured it (this one, or an earlier for skipped)
    # measured on the fallback resources of a stalled queue (ORCH_FALLBACK=1, the CPU core)
    fallback: bool = False

    def row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Layout:
    """Where one run writes: its output folder, its tasks' folders and scratch folders."""

    job_dir: Path  # OUTPUT_DIR/JOB: the index of past successes
    run_dir: Path  # OUTPUT_DIR/JOB/RUN_ID
    scratch_dir: Path  # SCRATCH_DIR/orchestrator-UID/JOB/RUN_ID
    run_id: str

    def task_dir(self, task: Task) -> Path:
        return self.run_dir / "tasks" / task.key


@dataclass
class Index:
    """The last success of each task key (its fingerprint, run and light curve), one small file
    per key under the job's output folder, each replaced atomically by the one process that
    measured that key: processes on different nodes never write the same file, and a run that
    is killed keeps what its finished tasks measured."""

    folder: Path  # OUTPUT_DIR/JOB/done

    def unchanged(self, task: Task) -> dict[str, str] | None:
        try:
            entry = json.loads((self.folder / f"{task.key}.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("fingerprint") != task.fingerprint:
            return None
        return entry if Path(entry.get("lightcurve", "")).is_file() else None

    def record(self, task: Task, result: TaskResult) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        entry = {
            "fingerprint": task.fingerprint,
            "run_id": result.measured_in_run,
            "lightcurve": result.lightcurve,
            "backend": result.backend,
        }
        atomic.write_json(self.folder / f"{task.key}.json", entry, 0o644, indent=1)


def run_tasks(
    tasks: list[Task],
    pipeline: Pipeline,
    layout: Layout,
    parallel: int,
    recompute: bool,
    on_done: Callable[[TaskResult], None],
) -> list[TaskResult]:
    """Every task, ``parallel`` at a time in this process's pool. Results in task order."""
    results: list[TaskResult | None] = [None] * len(tasks)
    threads = max(1, usable_cpus() // max(1, min(parallel, len(tasks) or 1)))

    def one(i: int) -> None:
        results[i] = run_task(tasks[i], pipeline, layout, threads, recompute)
        on_done(results[i])  # type: ignore[arg-type]

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        list(pool.map(one, range(len(tasks))))
    return [r for r in results if r is not None]


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (what a batch system's allocation
    binds it to, e.g. 4 cores of a 128-core node), not the node's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def run_task(
    task: Task,
    pipeline: Pipeline,
    layout: Layout,
    threads: int,
    recompute: bool,
    fallback: bool = False,
) -> TaskResult:
    """One task, wherever it runs (this process's pool, or one array task of a batch system):
    reused when unchanged, else measured; its result written beside its output
    (``tasks/KEY/result.json``, what the batch's collection reads) and, on success, recorded
    in the index. ``fallback``: the task runs on a stalled queue's fallback resources, where
    the builtin core measures on the CPU (whatever the manifest's pipeline and backend)."""
    index = Index(layout.job_dir / DONE_DIR)
    previous = None if recompute else index.unchanged(task)
    if previous is not None:
        result = reused(task, previous, layout)
    else:
        result = _run_one(task, pipeline, layout, threads, fallback)
        result.fallback = fallback
        if result.state == "measured":
            index.record(task, result)
    layout.task_dir(task).mkdir(parents=True, exist_ok=True)
    atomic.write_json(layout.task_dir(task) / RESULT_FILE, result.row(), 0o644, indent=1)
    return result


def reused(task: Task, previous: dict[str, str], layout: Layout) -> TaskResult:
    """An unchanged task: the earlier light curve, linked into this run's task folder."""
    source = Path(previous["lightcurve"])
    folder = layout.task_dir(task)
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "previous"
    if not link.exists():
        link.symlink_to(source.parent, target_is_directory=True)
    measured, failed, backend = _count_rows(source)
    return TaskResult(
        oid=task.oid,
        band=task.band,
        state="skipped",
        epochs_measured=measured,
        epochs_failed=failed,
        backend=backend or previous.get("backend", ""),
        lightcurve=str(source),
        measured_in_run=previous.get("run_id", ""),
    )


def command(task: Task, pipeline: BuiltinPipeline, outdir: Path) -> list[str]:
    """The ``photometry run`` command line of one task."""
    argv = [
        sys.executable,
        "-m",
        "orchestrator.dia.cli",
        "run",
        *("--oid", task.oid, "-r", repr(task.ra), "-d", repr(task.dec), "-b", task.band),
        *("-t", str(task.templates), "-s", str(task.science), "-o", str(outdir)),
        *("-p", str(pipeline.nprocs), "--backend", pipeline.backend),
        *("--cutout", str(pipeline.cutout), "--log-level", "warning"),
    ]
    if pipeline.kernel_half_width is not None:
        argv += ["--kernel-half-width", str(pipeline.kernel_half_width)]
    if pipeline.psf_wings is not None:
        argv += ["--psf-wings", pipeline.psf_wings]
    return argv


def _run_one(
    task: Task, pipeline: Pipeline, layout: Layout, threads: int, fallback: bool
) -> TaskResult:
    folder = layout.task_dir(task)
    scratch = layout.scratch_dir / task.key
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
    result = TaskResult(oid=task.oid, band=task.band, state="failed")
    phrosty = None if fallback else pipeline.phrosty
    try:
        if phrosty is not None:
            argv, env = phrosty_command(task, phrosty, folder, scratch, env)
        else:
            builtin = pipeline.builtin
            if fallback:  # the fallback resources have no GPU
                builtin = builtin.model_copy(update={"backend": "cpu"})
            argv = command(task, builtin, folder)
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
        result.exit_code = proc.returncode
        result.peak_mb = round(usage.ru_maxrss / 1024.0, 1)  # Linux: kilobytes
    except (OSError, ValueError) as exc:  # ValueError: a mount the runtime cannot express
        what = "phrosty" if phrosty is not None else "photometry run"
        result.error = f"could not start {what}: {exc}"
    finally:
        result.wall_s = round(time.monotonic() - started, 2)
        shutil.rmtree(scratch, ignore_errors=True)
    if phrosty is not None:
        return _finish_phrosty(task, folder, layout, result)
    lightcurve = folder / task.oid / f"{task.oid}_{task.band}_lightcurve.csv"
    if result.exit_code in (0, EXIT_FAILED_ROWS) and lightcurve.is_file():
        result.lightcurve = str(lightcurve)
        result.epochs_measured, result.epochs_failed, result.backend = _count_rows(lightcurve)
        if result.epochs_measured:  # a bad image fails its rows, not the object
            result.state = "measured"
            result.measured_in_run = layout.run_id
            return result
        result.error = f"no epoch measured: {_first_row_error(lightcurve)}"
    if not result.error:
        result.error = _last_error(folder / "task.log", result.exit_code)
    return result


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
        result.lightcurve = str(lightcurve)
        result.epochs_measured, result.epochs_failed, result.backend = _count_rows(lightcurve)
        if result.epochs_measured:
            result.state = "measured"
            result.measured_in_run = layout.run_id
            return result
        result.error = "no epoch measured: phrosty's light curve has no successful row"
    if not result.error:
        result.error = _last_error(folder / "task.log", result.exit_code)
    return result


def _count_rows(lightcurve: Path) -> tuple[int, int, str]:
    """Epochs measured and failed in a light curve CSV, and the backend that measured them."""
    measured = failed = 0
    backends: set[str] = set()
    with lightcurve.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("success") in ("True", "true", "1"):
                measured += 1
            else:
                failed += 1
            if row.get("backend"):
                backends.add(row["backend"])
    return measured, failed, ",".join(sorted(backends))


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
