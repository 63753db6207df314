"""What an executor is given (RunSpec), hands back (Handle, Outcome), and promises (Executor).

An executor takes an argv list and a full environment, never Python objects, so that every run
can be replayed by hand from what the run directory keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from orchestrator.store.base import RunRecord, RunState, Store

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
    # For executors other than local: which job and attempt, the executor's options
    # from the manifest, an array override (a retry of failed tasks), and the variables the
    # manifest itself sets (a batch script exports only those; sbatch passes the rest).
    job: str = ""
    attempt: int = 1
    options: Any = None
    array: str | None = None
    env_overrides: dict[str, str] = field(default_factory=dict)
    # A kind whose run is many tasks (a photometry batch) may say how to plan them: an
    # executor that runs arrays runs this first (on the submitting host, in the run directory,
    # with ``env``) and submits the array its last line of output names (``none``: nothing to
    # submit), each task told its index in ORCH_ARRAY_TASK_ID. Other executors ignore it: the
    # job then does all its work itself.
    plan_argv: list[str] | None = None


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
    # what the run used, where its executor measured it (``history --json``: result.usage):
    # wall_s, cpu_s (user + system) and max_rss_mb (the largest process) of the process tree;
    # a batch executor adds its allocation (cpu_hours, gpu_hours, alloc_cpus, alloc_gpus)
    usage: dict[str, Any] | None = None


@runtime_checkable
class Executor(Protocol):
    """Starts, follows and cancels runs. The daemon holds its executors as ``{name: executor}``
    and knows nothing else about any of them; ``RunSpec.options`` (the manifest's
    ``executor`` settings) and a run's ``executor_data`` are each executor's own business.

    Invariants:

    - A run outlives the daemon: nothing the executor keeps (pipes, Popen objects) is needed for
      the run to go on or for its outcome to be known; a fresh executor in a restarted daemon
      follows a run from its record alone (``adopt``).
    - ``poll_many`` never blocks on a run (or on a cluster: slow calls belong on the
      executor's own thread), and reports each outcome from durable evidence (a result file,
      a scheduler's accounting). Moving the record into the terminal state exactly once is
      the store's job (``finish_run``), done by the daemon with what ``poll_many`` hands back.
    - A process whose start (pid, start time) does not match the record is not the run's
      (pid reuse), and is never signalled.
    """

    name: str
    # Where this executor's run directories go; None: the daemon's runs directory.
    runs_root: Path | None
    # Whether runs go on when the daemon stops (batch jobs): then they are not drained.
    outlives_daemon: bool

    def open(self, store: Store) -> None:
        """Start whatever the executor runs in the background, writing to ``store``."""
        ...

    def close(self) -> None:
        """Stop it (runs themselves go on)."""
        ...

    def start(self, spec: RunSpec) -> Handle | None:
        """Start the run in the background: its owning process (store it with
        ``mark_running``), or None when the run is queued and the executor marks it running
        itself once it is.

        Raises ``ExecutorError`` (with a message fit for the run record) when the run cannot
        be started at all. Problems of the job's own command (not found, not executable,
        missing workdir) are not raised here: they end the run ``failed`` with exit code 127
        (126 for not executable) and a message, reported by ``poll_many``.
        """
        ...

    def adopt(self, run: RunRecord) -> Outcome | None:
        """Follow a run a previous daemon left active: None while it goes on, its Outcome when
        it ended meanwhile."""
        ...

    def poll_many(self, runs: Sequence[RunRecord]) -> dict[str, Outcome]:
        """The outcomes of those of ``runs`` that have ended, by run id.

        A run whose process is gone without leaving a result ends ``LOST`` with a message
        saying so. One run that cannot be polled is logged and left for the next call.
        """
        ...

    def cancel(self, run: RunRecord) -> None:
        """Ask the run to stop (its process group is terminated, then killed after the grace).

        Returns at once; ``poll_many`` later reports ``cancelled`` (or the outcome the run reached
        first). Cancelling a run that has already ended does nothing.
        """
        ...

    def max_active(self, options: Any) -> tuple[int, str] | None:
        """The most active runs of one job that ``options`` allow, and the setting that says
        so (for messages); None: no limit."""
        ...

    def preview(self, spec: RunSpec) -> list[tuple[str, str]]:
        """What starting ``spec`` would hand to the system, as (title, text) sections (a batch
        script), without starting or writing anything; [] when the argv says it all."""
        ...

    # The most runs of all jobs this executor runs at once; a due run beyond it waits in the
    # daemon's queue (daemon/slots.py) until one ends. None (or absent): no cap.
    capacity: int | None

    def log_name(self, options: Any, array: str | None) -> str:
        """The name of the run's log in its directory (an array run has one per task)."""
        ...

    def retry_array(self, options: Any, result: dict[str, Any] | None) -> str | None:
        """For a run of several tasks, the tasks a retry should run (those that did not
        succeed, from the run's ``result``); None: the whole run again."""
        ...

    def health(self) -> dict[str, Any]:
        """What ``status`` shows about the executor (queues, a paused submission)."""
        ...

    def status_note(self) -> str | None:
        """One line for systemd's STATUS when something is wrong, else None."""
        ...
