"""One run of a PhotometryBatch job: read the objects, plan, measure, collect.

Exit 0 when every object and band was measured (or reused unchanged); 1 when any failed or
could not be planned (the others are measured all the same, and a retry measures only what did
not succeed: the rest is unchanged); 2 when the batch cannot start (its table is unreadable).
The run's result (``status --json``, ``history --json``) holds the counts, the output folder
and one row per task; ``progress.json`` in the output folder (and ``ORCH_TASK_PROGRESS`` when
the daemon gives one) says how far the batch is while it runs.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from orchestrator import atomic
from orchestrator.tasks.photometry_batch.collect import write_summary
from orchestrator.tasks.photometry_batch.execute import Layout, TaskResult, run_tasks
from orchestrator.tasks.photometry_batch.objects import BatchInputError, expand, read_objects
from orchestrator.tasks.photometry_batch.plan import plan
from orchestrator.tasks.photometry_batch.spec import PhotometryBatchManifest

EXIT_OK, EXIT_FAILED, EXIT_UNUSABLE = 0, 1, 2


def run(manifest: PhotometryBatchManifest) -> tuple[int, dict[str, Any]]:
    """The whole batch; returns the exit status and the run's result."""
    spec = manifest.spec
    job = os.environ.get("ORCH_JOB") or manifest.name
    run_id = os.environ.get("ORCH_RUN_ID") or time.strftime("%Y%m%dT%H%M%S")
    try:
        rows, problems, table = read_objects(spec)
        layout = _layout(spec.output_dir, spec.scratch_dir, job, run_id)
    except BatchInputError as exc:
        print(f"ERROR: {exc}", flush=True)
        return EXIT_UNUSABLE, {"summary": f"batch not started: {exc}", "errors": [str(exc)]}
    tasks, task_problems = plan(rows, spec, table)
    problems += task_problems
    for problem in problems:
        print(f"not measured: {problem}", flush=True)
    progress = _Progress(layout.run_dir, len(tasks) + len(problems))
    for problem in problems:
        progress.add(problem.oid or "?", problem.band or "", "invalid")
    print(
        f"{len(tasks)} task(s) from {len(rows)} object(s), {spec.parallel} at a time; "
        f"output {layout.run_dir}",
        flush=True,
    )

    def done(result: TaskResult) -> None:
        progress.add(result.oid, result.band, result.state)
        line = f"{result.oid} {result.band}: {result.state}"
        if result.state in ("measured", "skipped"):
            line += f" ({result.epochs_measured} epochs, {result.epochs_failed} failed)"
        if result.error:
            line += f": {result.error}"
        print(line, flush=True)

    try:
        results = run_tasks(
            tasks, spec.pipeline.builtin, layout, spec.parallel, spec.recompute, done
        )
    finally:
        shutil.rmtree(layout.scratch_dir, ignore_errors=True)
    rows_out = [r.row() for r in results] + [
        TaskResult(
            oid=p.oid or "", band=p.band or "", state="invalid", error=f"{p.where}: {p.message}"
        ).row()
        for p in problems
    ]
    files = write_summary(layout.run_dir, rows_out)
    counts = {s: sum(r["state"] == s for r in rows_out) for s in _STATES}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no objects"
    result = {
        "summary": f"{len(rows_out)} object-band(s): {summary}",
        "output_dir": str(layout.run_dir),
        "counts": counts,
        "files": files,
        "tasks": rows_out,
    }
    code = EXIT_FAILED if counts["failed"] or counts["invalid"] else EXIT_OK
    return code, result


_STATES = ("measured", "skipped", "failed", "invalid")


def _layout(output_dir: str, scratch_dir: str, job: str, run_id: str) -> Layout:
    out = Path(expand(output_dir))
    scratch = Path(expand(scratch_dir))
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


class _Progress:
    """How far the batch is, rewritten atomically after each task (read by status)."""

    def __init__(self, run_dir: Path, total: int) -> None:
        self.paths = [run_dir / "progress.json"]
        extra = os.environ.get("ORCH_TASK_PROGRESS")
        if extra:
            self.paths.append(Path(extra))
        self.data: dict[str, Any] = {"total": total, "done": 0, "states": {}, "objects": {}}
        self.lock = threading.Lock()
        self._write()

    def add(self, oid: str, band: str, state: str) -> None:
        with self.lock:
            self.data["done"] += 1
            self.data["states"][state] = self.data["states"].get(state, 0) + 1
            self.data["objects"][f"{oid} {band}".strip()] = state
            self._write()

    def _write(self) -> None:
        for path in self.paths:
            try:
                atomic.write_json(path, self.data, 0o644)
            except OSError as exc:  # progress is a courtesy: the batch goes on without it
                print(f"warning: cannot write progress to {path}: {exc}", flush=True)
