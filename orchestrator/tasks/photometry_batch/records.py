"""What a batch's tasks record: where a run writes (:class:`Layout`) and one task's outcome
(:class:`TaskResult`, a row of the batch's summary), and the counts read from a light curve."""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator.tasks.photometry_batch.plan import Task


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
    # the objects measured on the same subtractions (the same images, one process), comma-separated
    measured_with: str = ""

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


def count_rows(lightcurve: Path) -> tuple[int, int, str]:
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
