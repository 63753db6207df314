"""What an O2Sync job remembers between runs, and the locks that keep two runs apart.

The state is one JSON file, ``<state_dir>/state.json``, replaced atomically::

    current    the tag the pointer names (mode cvmfs)
    promoted   [{tag, at, run_id}], oldest first, at most ``keep``: what rollback can go back to
    rejected   {tag: {at, reason, run_id}}: tags that failed verification (or were rolled
               back from); future runs skip them until ``orchestrator o2 unreject``
    build      {heads, at, alienv, run_id, log}: the last good build (mode source); no build
               runs while the repositories' heads equal these

Locks are ``flock`` on a file (``<state_dir>/lock`` for a job, ``<workdir>/.o2sync.lock`` for a
source work dir); the holder writes who it is into the file so that a refused run can name it.
A build that outlives a killed task (its own process group) is recorded there too, so that the
next run does not start a second build in the same work dir.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator import atomic
from orchestrator.tasks.o2sync.errors import LockHeldError, O2SyncError

STATE_FILE = "state.json"
STATE_VERSION = 1


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def expand_path(value: str, what: str) -> Path:
    """``~`` and ``$VARS`` expanded in the task's environment; an unset variable is an error."""
    expanded = os.path.expandvars(os.path.expanduser(value))
    if "$" in expanded:
        raise O2SyncError(
            f"{what} {value!r}: a variable in it is not set in the daemon's environment "
            f"(expanded to {expanded!r}); set it for the daemon or write the path out",
            "bad_path",
        )
    return Path(expanded).absolute()


def default_state_dir(job: str) -> Path:
    base = os.environ.get("ORCH_STATE_DIR")
    if not base:
        raise O2SyncError(
            "neither spec.state_dir nor ORCH_STATE_DIR is set: run the job through the "
            "daemon, or set spec.state_dir",
            "bad_path",
        )
    return Path(base) / "o2sync" / job


def atomic_write_text(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text`` atomically (orchestrator.atomic), its directory made first;
    world-readable by default: the pointer files are read by other users' batch jobs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, text, mode)


class JobState:
    """The state file of one job (see the module docstring)."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.path = state_dir / STATE_FILE
        self.data: dict[str, Any] = {
            "version": STATE_VERSION,
            "current": None,
            "promoted": [],
            "rejected": {},
            "build": None,
        }
        if self.path.exists():
            try:
                loaded = json.loads(self.path.read_text())
            except (OSError, ValueError) as exc:
                raise O2SyncError(
                    f"cannot read {self.path}: {exc}; move it away to start afresh "
                    "(the promoted-tag history for rollback is in it)",
                    "bad_state",
                ) from exc
            if not isinstance(loaded, dict):
                raise O2SyncError(f"{self.path} is not a JSON object; move it away", "bad_state")
            self.data.update(loaded)

    @property
    def current(self) -> str | None:
        value = self.data.get("current")
        return str(value) if value else None

    @property
    def promoted(self) -> list[dict[str, Any]]:
        return list(self.data.get("promoted") or [])

    @property
    def rejected(self) -> dict[str, dict[str, Any]]:
        return dict(self.data.get("rejected") or {})

    @property
    def build(self) -> dict[str, Any] | None:
        value = self.data.get("build")
        return dict(value) if isinstance(value, dict) else None

    def reject(self, tag: str, reason: str, run_id: str | None) -> None:
        rejected = self.rejected
        rejected[tag] = {"at": now_iso(), "reason": reason, "run_id": run_id}
        self.data["rejected"] = rejected
        self.save()

    def unreject(self, tag: str) -> bool:
        rejected = self.rejected
        found = rejected.pop(tag, None) is not None
        self.data["rejected"] = rejected
        self.save()
        return found

    def promote(self, tag: str, keep: int, run_id: str | None) -> None:
        history = [p for p in self.promoted if p.get("tag") != tag]
        history.append({"tag": tag, "at": now_iso(), "run_id": run_id})
        self.data["promoted"] = history[-keep:]
        self.data["current"] = tag
        self.save()

    def set_current(self, tag: str) -> None:
        self.data["current"] = tag
        self.save()

    def record_build(self, build: dict[str, Any]) -> None:
        self.data["build"] = build
        self.save()

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- locks


def _stat_fields(pid: int | str) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (state, ppid, pgrp, ...), or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    return stat.rsplit(")", 1)[1].split()


def _process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (field 22 of /proc/PID/stat)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def _group_alive(pgid: int, leader_start: int | None) -> bool:
    """Whether the process group a build ran in still has live (non-zombie) members.

    Zombies do not count: where PID 1 does not reap orphans (some containers), a finished
    build leaves them behind. A member that is the group leader with another start time means
    the group ended and its id was reused by a new session.
    """
    if not Path("/proc/self/stat").exists():  # not Linux: the signal test is all there is
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if not fields or int(fields[2]) != pgid or fields[0] in ("Z", "X"):
            continue
        reused = int(entry) == pgid and leader_start is not None and int(fields[19]) != leader_start
        return not reused
    return False


class FileLock:
    """An exclusive, non-blocking ``flock`` held for the life of a ``with`` block."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._fd: int | None = None

    def _holder(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, info: dict[str, Any]) -> None:
        assert self._fd is not None
        payload = json.dumps(info).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, payload, 0)
        os.fsync(self._fd)

    def __enter__(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self._holder()
            who = (
                f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"
                f" ({holder.get('job', '?')}, run {holder.get('run_id') or '-'})"
                if holder
                else "another process"
            )
            raise LockHeldError(
                f"{self.what} is in use by {who} (lock {self.path}); not starting. It runs "
                "once that one ends; if no such process exists, the lock is released by itself",
                holder=holder,
            ) from None
        self._fd = fd
        previous = self._holder()
        pgid = previous.get("build_pgid")
        if isinstance(pgid, int) and _group_alive(pgid, previous.get("build_leader_start")):
            self.__exit__(None, None, None)
            raise LockHeldError(
                f"{self.what}: a build started by an earlier run (process group {pgid}, run "
                f"{previous.get('run_id') or '-'}) is still running although that run ended; "
                f"not starting a second build there. Wait for it, or stop it: kill -TERM -{pgid}",
                holder=previous,
            )
        self._write(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": now_iso(),
                "job": os.environ.get("ORCH_JOB"),
                "run_id": os.environ.get("ORCH_RUN_ID"),
            }
        )
        return self

    def note_build(self, pgid: int | None) -> None:
        """Record (or clear, with None) the process group of a build in progress."""
        info = self._holder()
        info.pop("build_pgid", None)
        info.pop("build_leader_start", None)
        if pgid is not None:
            info["build_pgid"] = pgid
            info["build_leader_start"] = _process_start_time(pgid)
        self._write(info)

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None


@contextlib.contextmanager
def job_lock(state_dir: Path, job: str) -> Iterator[FileLock]:
    with FileLock(state_dir / "lock", f"O2Sync job {job!r}") as lock:
        yield lock


def signal_name(returncode: int) -> str | None:
    """'SIGKILL' for a return code of -9 (killed by a signal), else None."""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-returncode).name
    return None
