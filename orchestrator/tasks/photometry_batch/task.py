"""One run of a PhotometryBatch job: read the objects, plan, measure, collect.

Three ways to be started, one plan (``plan.json`` in the run's output folder):

- on this machine (the local executor): the whole batch, ``parallel`` tasks at a time;
- ``--plan``: plan only, and print the run's array (``0-N%PARALLEL``, or ``none``) as the last
  line: what an executor that runs arrays submits;
- with ``ORCH_ARRAY_TASK_ID`` set (one task of such an array): that task of the plan, then the
  batch's collection if it was the last to finish (``collect``).

Exit 0 when every object and band was measured (or reused unchanged); 1 when any failed or
could not be planned (the others are measured all the same, and a retry measures only what did
not succeed: the rest is unchanged); 2 when the batch cannot start (its table is unreadable).
An array task exits 0 or 1 for its own task. The run's result (``status --json``, ``history
--json``) holds the counts, the output folder and one row per object and band (`objects`).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from orchestrator.tasks.photometry_batch.collect import collect, write_progress
from orchestrator.tasks.photometry_batch.execute import run_group, run_tasks, usable_cpus
from orchestrator.tasks.photometry_batch.grouping import group_tasks
from orchestrator.tasks.photometry_batch.objects import (
    BatchInputError,
    Problem,
    expand,
    read_objects,
)
from orchestrator.tasks.photometry_batch.plan import PLAN_FILE, Task, plan, read_plan, write_plan
from orchestrator.tasks.photometry_batch.records import Layout, TaskResult
from orchestrator.tasks.photometry_batch.spec import PhotometryBatchManifest

EXIT_OK, EXIT_FAILED, EXIT_UNUSABLE = 0, 1, 2
ARRAY_TASK_ENV = "ORCH_ARRAY_TASK_ID"
FALLBACK_ENV = "ORCH_FALLBACK"


def run(manifest: PhotometryBatchManifest) -> tuple[int, dict[str, Any]]:
    """The whole batch in this process; returns the exit status and the run's result."""
    index = os.environ.get(ARRAY_TASK_ENV, "")
    if index.strip():
        return run_array_task(manifest, index)
    spec = manifest.spec
    try:
        layout, tasks, problems, groups = make_plan(manifest)
    except BatchInputError as exc:
        print(f"ERROR: {exc}", flush=True)
        return EXIT_UNUSABLE, {"summary": f"batch not started: {exc}", "errors": [str(exc)]}
    write_progress(layout, [], len(tasks) + len(problems))
    print(
        f"{len(tasks)} task(s) in {len(groups)} group(s) of the same images, "
        f"{len(problems)} left out; {spec.parallel} at a time; output {layout.run_dir}",
        flush=True,
    )
    done_rows: list[dict[str, Any]] = []
    lock = threading.Lock()

    def done(result: TaskResult) -> None:
        with lock:
            _print_result(result)
            done_rows.append(result.row())
            write_progress(layout, done_rows, len(tasks) + len(problems))

    try:
        members = [[tasks[i] for i in group] for group in groups]
        run_tasks(members, spec.pipeline, layout, spec.parallel, spec.recompute, done)
    finally:
        shutil.rmtree(layout.scratch_dir, ignore_errors=True)
    result = collect(layout, tasks, problems, claim=False, recompute=spec.recompute)
    assert result is not None  # every task of this process has written its result
    return _exit_code(result), result


def plan_only(manifest: PhotometryBatchManifest) -> tuple[int, str]:
    """``--plan``: write the plan; the exit status and the array to submit (``none``: no task
    can run, the run then only reports its problems)."""
    try:
        _, tasks, _, groups = make_plan(manifest)
    except BatchInputError as exc:
        print(f"ERROR: {exc}", flush=True)
        return EXIT_UNUSABLE, "none"
    if not tasks:
        return EXIT_OK, "none"
    return EXIT_OK, f"0-{len(groups) - 1}%{manifest.spec.parallel}"


def run_array_task(manifest: PhotometryBatchManifest, index: str) -> tuple[int, dict[str, Any]]:
    """Group ``index`` of the plan (one object, or objects on the same images); the batch's
    result when this array task completed the batch, else an empty result (the run's result
    file is then left to the task that collects)."""
    layout = _layout(manifest)
    if not (layout.run_dir / PLAN_FILE).exists():
        # a retry of the array's failed tasks is a new run, with no plan step of its own: each
        # of its tasks plans (the same inputs give the same plan, written atomically)
        layout, *_ = make_plan(manifest)
    tasks, problems, groups = read_plan(layout.run_dir)
    try:
        members = [tasks[i] for i in groups[int(index)]]
    except (ValueError, IndexError):
        message = f"array task {index!r}: the plan has groups 0-{len(groups) - 1}"
        print(f"ERROR: {message}", flush=True)
        return EXIT_UNUSABLE, {"summary": message, "errors": [message]}
    # on a stalled GPU queue's fallback resources (an executor's ORCH_FALLBACK=1): the CPU core
    fallback = os.environ.get(FALLBACK_ENV) == "1"
    spec = manifest.spec
    try:
        results = run_group(members, spec.pipeline, layout, usable_cpus(), spec.recompute, fallback)
    finally:
        shutil.rmtree(layout.scratch_dir / members[0].key, ignore_errors=True)
    for result in results:
        _print_result(result)
    ok = all(r.state in ("measured", "skipped") for r in results)
    code = EXIT_OK if ok else EXIT_FAILED
    batch = collect(layout, tasks, problems, claim=True, recompute=manifest.spec.recompute)
    if batch is not None:
        print(f"batch complete: {batch['summary']}", flush=True)
        return code, batch
    # the run's result file is the batch's, written by whichever task collects: not this one
    return code, {}


def make_plan(
    manifest: PhotometryBatchManifest,
) -> tuple[Layout, list[Task], list[Problem], list[list[int]]]:
    """Read the table, plan, group, write ``plan.json``; print each problem (the run's log)."""
    rows, problems, table = read_objects(manifest.spec)
    layout = _layout(manifest)
    tasks, task_problems = plan(rows, manifest.spec, table)
    problems += task_problems
    for problem in problems:
        print(f"not measured: {problem}", flush=True)
    groups = group_tasks(tasks, manifest.spec)
    write_plan(layout.run_dir, tasks, problems, groups)
    return layout, tasks, problems, groups


def _print_result(result: TaskResult) -> None:
    line = f"{result.oid} {result.band}: {result.state}"
    if result.state in ("measured", "skipped"):
        line += f" ({result.epochs_measured} epochs, {result.epochs_failed} failed)"
    if result.error:
        line += f": {result.error}"
    print(line, flush=True)


def _exit_code(result: dict[str, Any]) -> int:
    counts = result["counts"]
    return EXIT_FAILED if counts["failed"] or counts["invalid"] else EXIT_OK


def _layout(manifest: PhotometryBatchManifest) -> Layout:
    spec = manifest.spec
    job = os.environ.get("ORCH_JOB") or manifest.name
    run_id = os.environ.get("ORCH_RUN_ID") or time.strftime("%Y%m%dT%H%M%S")
    out = Path(expand(spec.output_dir))
    scratch = Path(expand(spec.scratch_dir))
    for what, path in (("output_dir", out), ("scratch_dir", scratch)):
        if not path.is_absolute():
            raise BatchInputError(f"spec.{what} {str(path)!r} is relative; write an absolute path")
    job_dir = out / job
    run_dir = job_dir / run_id
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BatchInputError(f"cannot make the output folder {run_dir}: {exc}") from exc
    scratch_run = scratch / f"orchestrator-{os.getuid()}" / job / run_id
    return Layout(job_dir=job_dir, run_dir=run_dir, scratch_dir=scratch_run, run_id=run_id)
