"""What an executor is given (RunSpec), hands back (Handle, Outcome), and promises (Executor).

An executor takes an argv list and a full environment, never Python objects, so that every run
can be replayed by hand from what the run directory keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from orchestrator.store.base import RunRecord, RunState

__all__ = ["Executor", "Handle", "Outcome", "RunSpec"]


@dataclass(frozen=True)
class RunSpec:
    """Everything needed to start one run.

    ``env`` is the FULL environment of the job's process (nothing is inherited from the
    daemon). ``workdir`` None runs the job in ``run_dir``. ``log_path`` receives stdout and
    stderr (appended). ``timeout_s`` is counted from the start of the job's process; at expiry
    its whole process group gets SIGTERM, and SIGKILL ``kill_grace_s`` later.
    """

    run_id: str
    argv: list[str]
    env: dict[str, str]
    workdir: str | None
    timeout_s: float
    kill_grace_s: float
    run_dir: Path
    log_path: Path
    # For executors other than local (Slurm): which job and attempt, the executor's options
    # from the manifest, an array override (a retry of failed tasks), and the variables the
    # manifest itself sets (a batch script exports only those; sbatch passes the rest).
    job: str = ""
    attempt: int = 1
    options: Any = None
    array: str | None = None
    env_overrides: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Handle:
    """The process that owns a started run: store both in the run record (``mark_running``)."""

    pid: int
    pid_start_time: int | None


@dataclass(frozen=True)
class Outcome:
    """How a run ended; ``state`` is always terminal."""

    state: RunState
    exit_code: int | None
    message: str | None
    finished_at: datetime


@runtime_checkable
class Executor(Protocol):
    """Starts, follows and cancels runs.

    Invariants:

    - A run outlives the daemon: nothing the executor keeps (pipes, Popen objects) is needed for
      the run to go on or for its outcome to be known; a fresh executor in a restarted daemon
      follows a run from its record alone (re-adoption).
    - ``poll`` never blocks on the run, and reports each outcome from durable evidence (a result
      file, a scheduler's accounting), so calling it again gives the same answer. Moving the
      record into the terminal state exactly once is the store's job (``finish_run``).
    - A process whose start (pid, start time) does not match the record is not the run's
      (pid reuse), and is never signalled.
    """

    name: str

    def start(self, spec: RunSpec) -> Handle:
        """Start the run in the background and return its owning process.

        Raises ``ExecutorError`` (with a message fit for the run record) when the run cannot
        be started at all. Problems of the job's own command (not found, not executable,
        missing workdir) are not raised here: they end the run ``failed`` with exit code 127
        (126 for not executable) and a message, reported by ``poll``.
        """
        ...

    def poll(self, run: RunRecord) -> Outcome | None:
        """None while the run goes on; its Outcome once it has ended.

        A run whose process is gone without leaving a result gives ``Outcome(LOST, ...)`` with
        a message saying so.
        """
        ...

    def cancel(self, run: RunRecord) -> None:
        """Ask the run to stop (its process group is terminated, then killed after the grace).

        Returns at once; ``poll`` later reports ``cancelled`` (or the outcome the run reached
        first). Cancelling a run that has already ended does nothing.
        """
        ...
