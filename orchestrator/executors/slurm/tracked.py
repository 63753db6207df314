"""What the Slurm executor keeps about each run it follows, its circuit breaker, and a run's
outcome from its tasks' results (pure)."""

from __future__ import annotations

import time
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
class FallbackLeg:
    """A run's fallback (``executor.slurm.fallback``): its script, rendered with the run's, and
    where the move of its pending tasks stands. ``state``: watching (no move yet), holding
    (``tasks`` are the candidates), cancelling (``tasks`` were held while pending: they never
    started), submitting, submitted (``job_id`` runs ``tasks``). Persisted in the run's
    executor data at each step, so a daemon killed mid-move finishes it after its restart."""

    script: Path
    after_s: float
    when_unavailable: bool
    throttle: str | None = None
    state: str = "watching"
    tasks: list[str] = field(default_factory=list)
    reason: str = ""
    at: str | None = None  # when the move was decided (ISO time)
    job_id: str | None = None
    submit_attempted: bool = False
    progress_at: float = 0.0  # monotonic: submission or the last task start seen

    def record(self) -> dict[str, Any]:
        return {
            "script": str(self.script),
            "after_s": self.after_s,
            "when_unavailable": self.when_unavailable,
            "throttle": self.throttle,
            "state": self.state,
            "tasks": self.tasks,
            "reason": self.reason,
            "at": self.at,
            "slurm_job_id": self.job_id,
            "submit_attempted": self.submit_attempted,
        }

    @classmethod
    def from_record(cls, data: dict[str, Any], now: float) -> FallbackLeg:
        return cls(
            script=Path(data["script"]),
            after_s=float(data["after_s"]),
            when_unavailable=bool(data.get("when_unavailable", True)),
            throttle=data.get("throttle"),
            state=str(data.get("state", "watching")),
            tasks=[str(t) for t in data.get("tasks") or []],
            reason=str(data.get("reason") or ""),
            at=data.get("at"),
            job_id=data.get("slurm_job_id"),
            submit_attempted=bool(data.get("submit_attempted")),
            progress_at=now,  # a restarted daemon waits `after` again: it saw no start
        )


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
    fallback: FallbackLeg | None = None
    seen_started: set[str] = field(default_factory=set)

    def moved(self, task: str) -> bool:
        return (
            self.fallback is not None
            and task in self.fallback.tasks
            and (self.fallback.state != "holding")
        )

    def job_of(self, task: str) -> str | None:
        """The Slurm job that runs ``task``: the fallback job for a moved task (None while the
        move is under way), else the run's job."""
        if self.moved(task):
            assert self.fallback is not None
            return self.fallback.job_id
        return self.slurm_job_id


def run_outcome(t: TrackedRun) -> Outcome:
    """A run's outcome once every task ended: the worst task's state; for an array, how many
    tasks succeeded and which did not."""
    results = t.task_results
    states = [RunState(results[task]["state"]) for task in t.tasks]
    worst = max(states, key=_SEVERITY.index)
    if t.tasks == [NO_TASK]:
        r = results[NO_TASK]
        message = None if worst == RunState.SUCCEEDED else f"Slurm state {r['slurm_state']}"
        if note := _fallback_note(t):
            message = (message or "succeeded") + note
        return Outcome(worst, r["exit_code"], message, utcnow())
    bad = [task for task in t.tasks if results[task]["state"] != RunState.SUCCEEDED]
    ok = len(t.tasks) - len(bad)
    message = f"{ok}/{len(t.tasks)} array tasks succeeded"
    if bad:
        message += f"; not succeeded: {','.join(bad)}"
    codes = [results[task]["exit_code"] for task in bad if results[task]["exit_code"]]
    message += _fallback_note(t)
    return Outcome(worst, codes[0] if codes else (0 if not bad else None), message, utcnow())


def _fallback_note(t: TrackedRun) -> str:
    fb = t.fallback
    if fb is None or fb.state not in ("submitted", "failed") or not fb.tasks:
        return ""
    which = "the job" if fb.tasks == [NO_TASK] else f"tasks {','.join(fb.tasks)}"
    if fb.state == "failed":
        return f"; {which} could not move to the fallback resources: {fb.reason}"
    return f"; {which} ran on the fallback resources: {fb.reason}"


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
    if isinstance(data.get("fallback"), dict):
        tracked.fallback = FallbackLeg.from_record(data["fallback"], time.monotonic())
    return tracked
