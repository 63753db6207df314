"""What the Slurm executor keeps about each run it follows, its circuit breaker, and a run's
outcome from its tasks' results (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.clock import utcnow
from orchestrator.executors.base import Outcome
from orchestrator.executors.slurm.render import NO_TASK
from orchestrator.store.base import RunRecord, RunState

# Severity order when array tasks end differently: the run takes the worst.
_SEVERITY = [
    RunState.SUCCEEDED,
    RunState.CANCELLED,
    RunState.TIMED_OUT,
    RunState.LOST,
    RunState.FAILED,
]


@dataclass
class CircuitBreaker:
    """Opens after ``threshold`` consecutive controller errors; any success closes it."""

    threshold: int = 3
    failures: int = 0
    opened_at: datetime | None = None
    last_error: str | None = None

    @property
    def open(self) -> bool:
        return self.opened_at is not None

    def success(self) -> bool:
        """Record a success; True when this closed an open breaker."""
        was_open = self.open
        self.failures, self.opened_at = 0, None
        return was_open

    def failure(self, error: str) -> bool:
        """Record a failure; True when this opened the breaker."""
        self.failures += 1
        self.last_error = error
        if self.opened_at is None and self.failures >= self.threshold:
            self.opened_at = utcnow()
            return True
        return False


@dataclass(eq=False)
class TrackedRun:
    run_id: str
    job: str
    run_dir: Path
    created_at: datetime
    script: Path | None
    tasks: list[str]  # array task ids as text, or [NO_TASK]
    max_resubmits: int
    slurm_job_id: str | None = None
    submission: int = 0
    needs_submit: bool = False
    lookup_first: bool = False
    submit_after: float = 0.0
    submit_failures: int = 0
    cancel_requested: bool = False
    marked_running: bool = False
    first_unknown: dict[str, float] = field(default_factory=dict)
    task_results: dict[str, dict[str, Any]] = field(default_factory=dict)


def run_outcome(t: TrackedRun) -> Outcome:
    """A run's outcome once every task ended: the worst task's state; for an array, how many
    tasks succeeded and which did not."""
    results = t.task_results
    states = [RunState(results[task]["state"]) for task in t.tasks]
    worst = max(states, key=_SEVERITY.index)
    if t.tasks == [NO_TASK]:
        r = results[NO_TASK]
        message = None if worst == RunState.SUCCEEDED else f"Slurm state {r['slurm_state']}"
        return Outcome(worst, r["exit_code"], message, utcnow())
    bad = [task for task in t.tasks if results[task]["state"] != RunState.SUCCEEDED]
    ok = len(t.tasks) - len(bad)
    message = f"{ok}/{len(t.tasks)} array tasks succeeded"
    if bad:
        message += f"; not succeeded: {','.join(bad)}"
    codes = [results[task]["exit_code"] for task in bad if results[task]["exit_code"]]
    return Outcome(worst, codes[0] if codes else (0 if not bad else None), message, utcnow())


def tracked_from_record(run: RunRecord) -> TrackedRun | Outcome:
    """A run a previous daemon left active, to follow from its record; or its Outcome when it
    can never have been submitted (no rendered script: the daemon stopped before it, or while
    the run's array was being planned)."""
    data = run.executor_data or {}
    script = Path(data["script"]) if data.get("script") else None
    if script is None or not script.exists():
        return Outcome(
            RunState.LOST,
            None,
            "the daemon stopped before the batch script was written; never submitted",
            utcnow(),
        )
    tracked = TrackedRun(
        run_id=run.run_id,
        job=run.job,
        run_dir=script.parent,
        created_at=run.created_at,
        script=script,
        tasks=list(data.get("tasks") or [NO_TASK]),
        max_resubmits=int(data.get("max_resubmits", 2)),
        slurm_job_id=data.get("slurm_job_id"),
        submission=int(data.get("submission", 0)),
        marked_running=run.state == RunState.RUNNING,
    )
    if tracked.slurm_job_id is None:
        tracked.needs_submit = True
        # A previous daemon may have called sbatch and died before recording the id.
        tracked.lookup_first = bool(data.get("submit_attempted_at"))
    tracked.task_results = dict((run.result or {}).get("tasks", {}))
    return tracked
