"""The local executor: each run is owned by a run shim process on this machine.

``start`` execs ``python -E -m orchestrator.executors.shim`` in a new session with the job's
full environment; the shim starts the job, enforces its timeout and writes ``result.json``.
Everything ``poll`` and ``cancel`` need is in the run record (shim pid and start time) and the run
directory, so a daemon that restarts follows runs started by its predecessor (re-adoption).

The run directory and the log are created 0700 and 0600 whatever the umask; the umask itself is
passed on unchanged, so the job's own files follow the user's.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from orchestrator.errors import ExecutorError, UnsafePermissionsError
from orchestrator.executors.base import Handle, Outcome, RunSpec
from orchestrator.executors.shim import CHILD_FILE, OUTCOME_FILE, SHIM_FILE
from orchestrator.procinfo import (
    ProcStat,
    is_same_process,
    process_start_time,
    session_members,
)
from orchestrator.settings import Settings
from orchestrator.statedir import ensure_private_dir, open_private_append
from orchestrator.store.base import RunRecord, RunState, Store

__all__ = ["LocalExecutor", "read_outcome", "shim_argv"]

log = structlog.get_logger("orchestrator.executors.local")

# The directory that holds the `orchestrator` package: the shim is started with it as its
# working directory so that `-m orchestrator.executors.shim` resolves whether or not the package
# is installed. `-E` keeps the job's PYTHON* variables (PYTHONPATH, PYTHONHOME) from changing
# which code the shim runs; the job itself still gets them.
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])

_SHIM_READY_WAIT_S = 2.0
_SESSION_KILL_PASSES = 5

_RESULT_STATES = {
    "succeeded": RunState.SUCCEEDED,
    "failed": RunState.FAILED,
    "timed_out": RunState.TIMED_OUT,
    "cancelled": RunState.CANCELLED,
}


def shim_argv(spec: RunSpec, python: str = sys.executable) -> list[str]:
    """The command line that starts the shim for ``spec`` (also what a person would replay)."""
    argv = [
        python,
        "-E",
        "-m",
        "orchestrator.executors.shim",
        "--run-dir",
        str(spec.run_dir),
        "--log",
        str(spec.log_path),
        "--timeout-s",
        repr(float(spec.timeout_s)),
        "--grace-s",
        repr(float(spec.kill_grace_s)),
    ]
    if spec.workdir is not None:
        argv += ["--workdir", spec.workdir]
    return [*argv, "--", *spec.argv]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # torn or unreadable: the shim writes atomically, so treat as absent
    return data if isinstance(data, dict) else None


def read_outcome(run_dir: Path) -> Outcome | None:
    """The Outcome recorded in ``run_dir/result.json``, or None when there is none (yet)."""
    data = _read_json(run_dir / OUTCOME_FILE)
    if data is None:
        return None
    state = _RESULT_STATES.get(str(data.get("state")), RunState.FAILED)
    finished_raw = data.get("finished_at")
    try:
        finished_at = (
            datetime.fromisoformat(finished_raw).astimezone(UTC)
            if isinstance(finished_raw, str)
            else datetime.now(UTC)
        )
    except ValueError:
        finished_at = datetime.now(UTC)
    exit_code = data.get("exit_code")
    message = data.get("message")
    usage = data.get("usage")
    return Outcome(
        state=state,
        exit_code=exit_code if isinstance(exit_code, int) else None,
        message=message if isinstance(message, str) else None,
        finished_at=finished_at,
        usage={k: float(v) for k, v in usage.items() if isinstance(v, int | float)}
        if isinstance(usage, dict)
        else None,
    )


# Login-node etiquette: at most this many local runs at once, whatever the jobs' policies
# (NERSC asks for light use of login nodes; the token refresh and the CVMFS probes are light,
# a burst of them is not). ORCH_MAX_LOCAL_RUNS changes it; 0 lifts the cap.
DEFAULT_MAX_LOCAL_RUNS = 4


def from_settings(settings: Settings) -> LocalExecutor:
    """The daemon's local executor (its runs go under the state directory's ``runs/``)."""
    from orchestrator.settings import env_float

    cap = int(env_float("ORCH_MAX_LOCAL_RUNS", DEFAULT_MAX_LOCAL_RUNS))
    return LocalExecutor(capacity=cap or None)


class LocalExecutor:
    """Runs jobs on this machine under the run shim; see ``orchestrator.executors.base``.

    Thread-safe. Keeps the Popen objects of the shims it started only to reap them (no zombies);
    nothing about a run's outcome depends on them.
    """

    name = "local"
    outlives_daemon = False  # the daemon drains its local runs when it stops

    def __init__(self, runs_root: Path | None = None, capacity: int | None = None) -> None:
        self.runs_root = runs_root
        self.capacity = capacity  # runs of all jobs at once (None: no cap)
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    # -------------------------------------------------------------- the contract's small parts

    def open(self, store: Store) -> None:
        """Nothing runs in the background: every call works from the run's record and files."""

    def close(self) -> None:
        """See :meth:`open`."""

    def max_active(self, options: Any) -> tuple[int, str] | None:
        return None  # policy.concurrency is the limit here

    def log_name(self, options: Any, array: str | None) -> str:
        return "output.log"

    def preview(self, spec: RunSpec) -> list[tuple[str, str]]:
        return []  # the argv, under the run shim (its own session, killed as a group)

    def retry_array(self, options: Any, result: dict[str, Any] | None) -> str | None:
        return None

    def health(self) -> dict[str, Any]:
        with self._lock:
            return {"running_shims": len(self._children)}  # started here, not yet reaped

    def status_note(self) -> str | None:
        return None

    def adopt(self, run: RunRecord) -> Outcome | None:
        """A run a previous daemon left: its shim (found from the record or ``shim.json``)
        still runs, or its outcome."""
        return self.poll(run)

    def poll_many(self, runs: Sequence[RunRecord]) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}
        for run in runs:
            try:
                outcome = self.poll(run)
            except Exception:  # one unreadable run directory must not hide the others' ends
                log.exception("run_poll_failed", job=run.job, run_id=run.run_id)
                continue
            if outcome is not None:
                outcomes[run.run_id] = outcome
        return outcomes

    # -------------------------------------------------------------- start

    def start(self, spec: RunSpec) -> Handle:
        """Start the shim for ``spec``; ``ExecutorError`` when it cannot be started.

        The job's own command is checked by the shim (see ``Executor.start``), so that a
        missing command ends as a failed run with exit code 127 and a message in its log.
        """
        try:
            ensure_private_dir(spec.run_dir)
            if spec.log_path.parent != spec.run_dir:
                ensure_private_dir(spec.log_path.parent)
        except (OSError, UnsafePermissionsError) as exc:
            raise ExecutorError(
                f"run {spec.run_id}: cannot create run directory {spec.run_dir}: {exc}"
            ) from exc
        argv = shim_argv(spec)
        try:
            log_fd = open_private_append(spec.log_path)
        except OSError as exc:
            raise ExecutorError(
                f"run {spec.run_id}: cannot open log {spec.log_path}: {exc}"
            ) from exc
        try:
            # The shim's own stderr (a traceback if it fails before taking over) goes to the
            # log too; the daemon holds no pipe, so the run outlives the daemon. A new session:
            # its id, the shim's pid, names every process of the run (see _kill_orphaned_job).
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_fd,
                env=dict(spec.env),
                cwd=_PACKAGE_PARENT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise ExecutorError(
                f"run {spec.run_id}: cannot start the run shim ({argv[0]}): {exc}"
            ) from exc
        finally:
            os.close(log_fd)
        # The start time is the fork's, unchanged by exec: known at once, no need to wait.
        start_time = process_start_time(child.pid)
        with self._lock:
            self._children[spec.run_id] = child
        return Handle(pid=child.pid, pid_start_time=start_time)

    # -------------------------------------------------------------- follow

    def _reap(self) -> None:
        """Collect the exit status of every shim we started that has ended."""
        with self._lock:
            for run_id, child in list(self._children.items()):
                if child.poll() is not None:
                    del self._children[run_id]

    def _owner(self, run: RunRecord) -> tuple[int | None, int | None]:
        """The shim's (pid, start time): from the record, else from ``shim.json``."""
        if run.pid is not None:
            return run.pid, run.pid_start_time
        if run.run_dir is not None:
            data = _read_json(Path(run.run_dir) / SHIM_FILE)
            if data is not None and isinstance(data.get("pid"), int):
                start = data.get("start_time")
                return data["pid"], start if isinstance(start, int) else None
        return None, None

    def is_alive(self, run: RunRecord) -> bool:
        """Whether the run's shim (same pid AND same start time) is still running."""
        self._reap()
        pid, start_time = self._owner(run)
        return is_same_process(pid, start_time)

    def poll(self, run: RunRecord) -> Outcome | None:
        """None while the shim lives; then the result file's Outcome, or LOST without one."""
        if self.is_alive(run):
            return None
        # Order matters: the shim writes result.json before it exits, so once it is seen gone
        # a missing result file means it never wrote one.
        if run.run_dir is not None:
            outcome = read_outcome(Path(run.run_dir))
            if outcome is not None:
                return outcome
        pid, _ = self._owner(run)
        where = run.run_dir or "(no run directory)"
        if pid is None:
            message = f"run shim never started (no pid recorded, no shim.json in {where})"
        else:
            message = f"run shim (pid {pid}) is gone and left no {OUTCOME_FILE} in {where}"
            if run.run_dir is not None and self._kill_orphaned_job(Path(run.run_dir)):
                message += "; its orphaned job was killed"
        return Outcome(RunState.LOST, None, message, datetime.now(UTC))

    @staticmethod
    def _kill_orphaned_job(run_dir: Path) -> bool:
        """SIGKILL what is left of a job whose shim died without a result, so that a retry
        never runs beside it; returns whether anything was killed.

        Three records, because each misses something: the shim's session (``shim.json``,
        written before any job process exists) holds every job process that did not call
        setsid, even one started an instant before the shim died; the job's process group
        (``child.json``) covers a shim that did not lead its own session (started by hand);
        ``child.json``'s ``escaped`` lists the processes that left the session, as far as the
        shim saw them. Every pid is checked against its start time, so a reused pid is spared.
        """
        killed = False
        shim = _read_json(run_dir / SHIM_FILE) or {}
        shim_pid, shim_start, sid = shim.get("pid"), shim.get("start_time"), shim.get("sid")
        if isinstance(shim_pid, int) and isinstance(shim_start, int) and sid == shim_pid:
            # A few passes: a process forked between one look and the kill is in the next.
            for _ in range(_SESSION_KILL_PASSES):
                members = _session_of_dead_shim(shim_pid, shim_start)
                if not members:
                    break
                for proc in members:
                    killed |= _kill(proc.pid)
                time.sleep(0.01)
        child = _read_json(run_dir / CHILD_FILE) or {}
        pgid = child.get("pgid")
        if isinstance(pgid, int) and is_same_process(pgid, child.get("start_time")):
            try:
                os.killpg(pgid, signal.SIGKILL)
                killed = True
            except ProcessLookupError:
                pass  # the group ended after the check
        escaped = child.get("escaped")
        for entry in escaped if isinstance(escaped, list) else []:
            pid = entry.get("pid") if isinstance(entry, dict) else None
            start = entry.get("start_time") if isinstance(entry, dict) else None
            if isinstance(pid, int) and isinstance(start, int) and is_same_process(pid, start):
                killed |= _kill(pid)
        return killed

    def cancel(self, run: RunRecord) -> None:
        """SIGTERM to the run's shim, which stops the job's group and records ``cancelled``."""
        pid, start_time = self._owner(run)
        if pid is None or not is_same_process(pid, start_time):
            return  # already ended (poll reports it) or the pid now belongs to someone else
        if run.run_dir is not None:
            # The shim installs its SIGTERM handler before it writes shim.json; a SIGTERM that
            # came earlier would kill it by default action and leave the run LOST. A shim
            # needs a few tens of milliseconds to get there.
            shim_file = Path(run.run_dir) / SHIM_FILE
            deadline = time.monotonic() + _SHIM_READY_WAIT_S
            while not shim_file.exists() and time.monotonic() < deadline:
                if not is_same_process(pid, start_time):
                    return
                time.sleep(0.01)
        # ProcessLookupError: it ended between the check and the signal; poll reports it.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def _kill(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _session_of_dead_shim(shim_pid: int, shim_start: int) -> list[ProcStat]:
    """The live processes of the session a dead shim led.

    The kernel never hands out a pid that is still some process's session id, so while a
    member lives no other session can carry this id. Once all members are gone the pid may
    be reused; a live process holding it with another start time shows that, and then the
    session found (if any) is the new process's: nothing is returned. Members are also
    required to have started no earlier than the shim.
    """
    holder_start = process_start_time(shim_pid)
    if holder_start is not None and holder_start != shim_start:
        return []  # the pid was reused (the shim's zombie, same start time, is fine)
    return [
        proc
        for proc in session_members(shim_pid)
        if proc.pid != shim_pid and not proc.exited and proc.start_time >= shim_start
    ]
