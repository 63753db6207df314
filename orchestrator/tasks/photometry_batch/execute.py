"""Run a batch's task groups: a bounded pool on this machine, or one group per array task.

One process per group (not one per batch): a group is the objects that lie on the same images
(plan.py), measured on one subtraction of each image pair, and is most often one object. A
process that crashes, runs out of memory or is killed fails its group alone, its memory goes
back when it ends, and its wall time and peak memory are its group's (``wait4``'s resource use
of that child; :mod:`.process`). A group writes into its first task's folder of the run's
output (``tasks/<oid>_<band>/``, its log beside; each task's ``result.json`` in its own) and
keeps its temporary files in its own scratch folder (``TMPDIR`` points there), removed when it
ends: parallel processes never share one (the PIT's users met phrosty runs clobbering a shared
temporary directory).

A task whose fingerprint matches the last success of the same object and band (``done/KEY.json``
in the job's output folder) is not run: its result is that earlier one, linked into this run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from orchestrator import atomic
from orchestrator.tasks.photometry_batch.plan import Task
from orchestrator.tasks.photometry_batch.process import measure
from orchestrator.tasks.photometry_batch.records import Layout, TaskResult, count_rows
from orchestrator.tasks.photometry_batch.spec import Pipeline

DONE_DIR = "done"  # OUTPUT_DIR/JOB/done/KEY.json: the last success of each object and band
RESULT_FILE = "result.json"  # tasks/KEY/result.json: the task's row of the summary
EXIT_FAILED_ROWS = 1  # photometry run: the light curve is written, some epochs failed


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
    groups: list[list[Task]],
    pipeline: Pipeline,
    layout: Layout,
    parallel: int,
    recompute: bool,
    on_done: Callable[[TaskResult], None],
) -> list[TaskResult]:
    """Every group of tasks, ``parallel`` groups at a time in this process's pool."""
    results: list[list[TaskResult]] = [[] for _ in groups]
    threads = max(1, usable_cpus() // max(1, min(parallel, len(groups) or 1)))

    def one(i: int) -> None:
        results[i] = run_group(groups[i], pipeline, layout, threads, recompute)
        for result in results[i]:
            on_done(result)

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        list(pool.map(one, range(len(groups))))
    return [r for group in results for r in group]


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (what a batch system's allocation
    binds it to, e.g. 4 cores of a 128-core node), not the node's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def run_group(
    tasks: list[Task],
    pipeline: Pipeline,
    layout: Layout,
    threads: int,
    recompute: bool,
    fallback: bool = False,
) -> list[TaskResult]:
    """A group of tasks (objects on the same images; often one), wherever it runs (this
    process's pool, or one array task of a batch system): each task reused when unchanged,
    the others measured together by one process; each result written beside its output
    (``tasks/KEY/result.json``, what the batch's collection reads) and, on success, recorded
    in the index. ``fallback``: on a stalled queue's fallback resources, where the builtin core
    measures on the CPU (whatever the manifest's pipeline and backend)."""
    index = Index(layout.job_dir / DONE_DIR)
    results: dict[str, TaskResult] = {}
    todo = []
    for task in tasks:
        previous = None if recompute else index.unchanged(task)
        if previous is not None:
            results[task.key] = reused(task, previous, layout)
        else:
            todo.append(task)
    if todo:
        measured = measure(todo, pipeline, layout, threads, fallback)
        for task, result in zip(todo, measured, strict=True):
            result.fallback = fallback
            if result.state == "measured":
                index.record(task, result)
            results[task.key] = result
    for task in tasks:
        layout.task_dir(task).mkdir(parents=True, exist_ok=True)
        atomic.write_json(
            layout.task_dir(task) / RESULT_FILE, results[task.key].row(), 0o644, indent=1
        )
    return [results[task.key] for task in tasks]


def reused(task: Task, previous: dict[str, str], layout: Layout) -> TaskResult:
    """An unchanged task: the earlier light curve, linked into this run's task folder."""
    source = Path(previous["lightcurve"])
    folder = layout.task_dir(task)
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "previous"
    if not link.exists():
        link.symlink_to(source.parent, target_is_directory=True)
    measured, failed, backend = count_rows(source)
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
