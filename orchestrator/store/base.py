"""The run store's vocabulary: run states, triggers, the run record, and the Store protocol.

A run record is written (state ``pending``) before its process starts, moves to ``running`` once
the executor has a pid, and moves exactly once into a terminal state. Everything the daemon knows
about a run after a restart comes from its record plus the files in its run directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "ACTIVE_STATES",
    "TERMINAL_STATES",
    "RunRecord",
    "RunState",
    "Store",
    "Trigger",
]


class RunState(StrEnum):
    """Where a run is in its life; the values are what the store and the CLI show."""

    PENDING = "pending"  # record written, process not (yet) started
    RUNNING = "running"  # process started, pid recorded
    SUCCEEDED = "succeeded"  # exit code 0
    FAILED = "failed"  # non-zero exit, killed by a signal, or could not start
    TIMED_OUT = "timed_out"  # killed by the shim after policy.timeout
    CANCELLED = "cancelled"  # killed on request (CLI, concurrency: replace, manifest removed)
    MISSED = "missed"  # a scheduled time that passed while the daemon was down, not caught up
    LOST = "lost"  # process gone and no result file: the outcome is unknown
    INTERRUPTED = "interrupted"  # stopped because the daemon stopped (drain); retried per policy


TERMINAL_STATES: frozenset[RunState] = frozenset(
    {
        RunState.SUCCEEDED,
        RunState.FAILED,
        RunState.TIMED_OUT,
        RunState.CANCELLED,
        RunState.MISSED,
        RunState.LOST,
        RunState.INTERRUPTED,
    }
)
ACTIVE_STATES: frozenset[RunState] = frozenset({RunState.PENDING, RunState.RUNNING})


class Trigger(StrEnum):
    """Why a run was created."""

    SCHEDULE = "schedule"  # a due cron/every fire time
    CATCHUP = "catchup"  # a fire time missed while the daemon was down, run on start
    MANUAL = "manual"  # `orchestrator trigger`
    AFTER = "after"  # a job named in `after:` succeeded
    RETRY = "retry"  # policy.retries after a failed, timed-out or lost run
    CHANGE = "change"  # `schedule: {on: change}` and the manifest changed


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(frozen=True)
class RunRecord:
    """One run of one job as the store holds it.

    Datetimes are timezone-aware UTC. ``state`` holds a ``RunState`` and ``trigger`` a
    ``Trigger`` (both are ``str`` subclasses, so plain strings compare equal). ``result`` is
    free-form JSON that job kinds add to (e.g. files produced); ``executor_data`` is JSON the
    executor needs to follow the run (e.g. a batch system's job id).
    """

    run_id: str
    job: str
    manifest_hash: str
    trigger: str
    attempt: int
    state: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    log_path: str | None
    run_dir: str | None
    executor: str
    pid: int | None
    pid_start_time: int | None
    scheduled_for: datetime | None
    retry_of: str | None
    message: str | None
    result: dict[str, Any] = field(default_factory=dict)
    executor_data: dict[str, Any] = field(default_factory=dict)

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to finish, None until both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict keyed by the field names; datetimes as ISO-8601 UTC strings."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                out[f.name] = _iso(value)
            elif isinstance(value, StrEnum):
                out[f.name] = str(value)
            elif isinstance(value, dict):
                out[f.name] = dict(value)
            else:
                out[f.name] = value
        return out


@runtime_checkable
class Store(Protocol):
    """Run history and per-job daemon state.

    Invariants every implementation keeps:

    - A run moves into a terminal state at most once: ``finish_run`` changes only a run that is
      still pending or running, atomically, and says whether it did. Two threads or processes
      racing to finish one run therefore cannot both succeed.
    - ``mark_running`` moves only a pending run.
    - Datetimes go in and come out timezone-aware in UTC (naive datetimes are refused with
      ``ValueError``).
    - Methods are safe to call from several threads; another process may read the same store
      at the same time.

    Errors: ``StoreError`` when the store cannot be opened or has an unknown schema version, and
    when a method that changes one run names a run that does not exist; ``ValueError`` for
    arguments that can never be valid (a non-terminal state passed to ``finish_run``).
    """

    def new_run_id(self, now: datetime | None = None) -> str:
        """A fresh, time-sortable run id ``YYYYMMDDTHHMMSSZ-<6 hex>`` (UTC)."""
        ...

    def create_run(
        self,
        job: str,
        manifest_hash: str,
        trigger: str,
        attempt: int = 1,
        scheduled_for: datetime | None = None,
        executor: str = "local",
        retry_of: str | None = None,
        run_id: str | None = None,
        state: RunState = RunState.PENDING,
        message: str | None = None,
    ) -> RunRecord:
        """Write a new run record (created now) and return it.

        A terminal ``state`` (e.g. ``missed``) also sets ``finished_at`` to the creation time.
        Raises ``StoreError`` when ``run_id`` is given and already exists.
        """
        ...

    def set_run_paths(self, run_id: str, run_dir: str, log_path: str) -> None:
        """Record where the run's directory and log file are. ``StoreError`` if no such run."""
        ...

    def mark_running(
        self,
        run_id: str,
        pid: int | None,
        pid_start_time: int | None,
        started_at: datetime | None = None,
    ) -> bool:
        """Move a pending run to running with its pid (None: a batch job, no local process);
        False when the run was not pending."""
        ...

    def finish_run(
        self,
        run_id: str,
        state: RunState,
        exit_code: int | None = None,
        message: str | None = None,
        finished_at: datetime | None = None,
        result: dict[str, Any] | None = None,
    ) -> bool:
        """Move a pending or running run into terminal ``state``; True only for the call that did.

        This is the exactly-once guard: a run already terminal (or unknown) is left alone and
        False is returned. ``result`` is merged into the stored result. ``message`` None keeps
        the stored message. ``ValueError`` when ``state`` is not terminal.
        """
        ...

    def update_result(self, run_id: str, result: dict[str, Any]) -> None:
        """Merge ``result`` into the run's result JSON (top-level keys replace; None deletes)."""
        ...

    def set_message(self, run_id: str, message: str) -> None:
        """Replace the run's message; StoreError for an unknown run."""

    def update_executor_data(self, run_id: str, data: dict[str, Any]) -> None:
        """Merge ``data`` into the run's executor data JSON (top-level keys replace)."""
        ...

    def record_missed(
        self, job: str, manifest_hash: str, scheduled_for: datetime, message: str
    ) -> RunRecord:
        """Record a scheduled time that was not run: state ``missed``, trigger ``schedule``."""
        ...

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run with this id, or None."""
        ...

    def active_runs(self, job: str | None = None) -> list[RunRecord]:
        """Pending and running runs (of ``job``, or of every job), oldest first."""
        ...

    def history(self, job: str | None = None, limit: int = 50) -> list[RunRecord]:
        """Up to ``limit`` runs, newest first (by created_at, then run_id)."""
        ...

    def last_run(self, job: str) -> RunRecord | None:
        """The newest run of ``job`` in any state, or None."""
        ...

    def last_finished_run(self, job: str, state: RunState | None = None) -> RunRecord | None:
        """The newest terminal run of ``job`` other than ``missed`` (of ``state`` when given),
        or None."""
        ...

    def run_counts(self) -> dict[tuple[str, str], int]:
        """How many runs each (job, state) has."""
        ...

    def finished_durations(self) -> list[tuple[str, str, float]]:
        """(job, state, seconds from start to finish) of every finished run kept."""
        ...

    def search(
        self,
        job: str | None = None,
        states: list[str] | None = None,
        since: datetime | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        """Runs newest first, of ``job``, in one of ``states``, created since ``since``."""
        ...

    def usage_rows(self, since: datetime) -> list[tuple[str, str, str, dict[str, Any]]]:
        """(job, executor, finished_at, result.usage) of runs finished since ``since``."""
        ...

    def count_runs(self, job: str | None = None, state: RunState | None = None) -> int:
        """How many runs match ``job`` and ``state`` (None matches all)."""
        ...

    def prune(self, job: str, keep: int) -> list[RunRecord]:
        """Delete the terminal runs of ``job`` beyond the newest ``keep`` and return them.

        Active runs are never pruned. The caller removes the returned runs' directories.
        """
        ...

    def get_job_state(self, job: str, key: str, default: Any = None) -> Any:
        """The JSON value stored for (job, key), or ``default``."""
        ...

    def set_job_state(self, job: str, key: str, value: Any) -> None:
        """Store a JSON-serialisable value for (job, key), replacing any earlier one."""
        ...

    def all_job_state(self, key: str) -> dict[str, Any]:
        """``{job: value}`` for every job that has ``key``."""
        ...

    def close(self) -> None:
        """Release the store; later calls fail."""
        ...


def run_dir_of(record: RunRecord) -> Path | None:
    """The run's directory as a Path, or None when it was never set."""
    return None if record.run_dir is None else Path(record.run_dir)
