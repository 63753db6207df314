"""One daemon per state directory, also across login nodes that share a file system.

Two mechanisms, because neither is enough alone:

- ``daemon.lock``: a non-blocking ``flock`` held for the daemon's life. It is exact on one host
  and released by the kernel when the process dies, but on network file systems it may be
  local to each node (Lustre mounted without ``-o flock``, GPFS/DVS exports, old NFS), so two
  login nodes can both "hold" it.
- ``daemon.lease``: a JSON heartbeat file (host, pid, pid_start_time, started_at, heartbeat_at,
  version, lease_id) rewritten atomically every ``heartbeat_s``. Another host refuses to start
  while the heartbeat is younger than ``stale_after_s``; on the same host a live holder (pid
  and start time match, so a reused pid is not mistaken for it) is refused outright.

A stale lease (old heartbeat from another host, or a dead holder on this host) is taken over; the
reason is kept in ``Lease.takeover`` for the caller to log. ``heartbeat()`` re-reads the file
before rewriting it, so a daemon whose lease was taken over (it hung longer than
``stale_after_s``, or two hosts raced at start) finds out and stops with LeaseHeldError.

Heartbeat ages across hosts rely on synchronised clocks (NTP), as on every HPC cluster. Where
flock is node-local, two hosts that start within the same instant can both write the lease; the
rename makes one of them win, and the loser's next ``heartbeat()`` (within ``heartbeat_s``)
raises, so the overlap lasts one heartbeat at most.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from orchestrator import __version__, atomic
from orchestrator.errors import LeaseHeldError
from orchestrator.logs import get_logger
from orchestrator.procinfo import is_same_process, process_start_time

log = get_logger(component="lease")

LOCK_NAME = "daemon.lock"
LEASE_NAME = "daemon.lease"


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _read_lease_file(path: Path) -> dict[str, Any] | None:
    """The lease file's content; None when absent; ``{}`` when unreadable or not a JSON object."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("lease_file_unreadable", path=str(path), error=str(exc))
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def heartbeat_age_s(holder: dict[str, Any], now: datetime | None = None) -> float | None:
    """Seconds since the holder's last heartbeat, or None when the file has no valid time."""
    beat = _parse_time(holder.get("heartbeat_at"))
    if beat is None:
        return None
    return ((now or _now()) - beat).total_seconds()


def read_holder(state_dir: Path) -> dict[str, Any] | None:
    """Who holds the lease on ``state_dir``, for ``orchestrator status``; None when nobody.

    The lease file's fields plus ``heartbeat_age_s`` (seconds, None if unknown) and ``path``.
    A lease file left behind by a crashed daemon is still returned: judge it by its age.
    """
    path = Path(state_dir) / LEASE_NAME
    holder = _read_lease_file(path)
    if holder is None:
        return None
    return {**holder, "heartbeat_age_s": heartbeat_age_s(holder), "path": str(path)}


def describe_holder(holder: dict[str, Any] | None, path: Path) -> str:
    """One sentence naming the holder: host, pid, since when, heartbeat age, lease file."""
    if not holder:
        return f"held by an unknown process (lease file {path} is missing or unreadable)"
    age = heartbeat_age_s(holder)
    age_text = f"{age:.0f}s ago" if age is not None else "unknown"
    return (
        f"held by pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
        f"since {holder.get('started_at', '?')} (last heartbeat {age_text}; "
        f"lease file {path})"
    )


class Lease:
    """The right to run the daemon on one state directory; acquire, heartbeat, release."""

    def __init__(
        self,
        state_dir: Path,
        heartbeat_s: float = 10.0,
        stale_after_s: float | None = None,
        *,
        hostname: str | None = None,
    ) -> None:
        """``stale_after_s`` defaults to three missed heartbeats plus 5 s of slack for a slow
        network file system; ``hostname`` defaults to socket.gethostname()."""
        if heartbeat_s <= 0:
            raise ValueError(f"heartbeat_s must be > 0, got {heartbeat_s}")
        self.state_dir = Path(state_dir)
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = 3 * heartbeat_s + 5 if stale_after_s is None else stale_after_s
        self.hostname = hostname or socket.gethostname()
        self.lock_path = self.state_dir / LOCK_NAME
        self.lease_path = self.state_dir / LEASE_NAME
        #: Why an existing lease was taken over in acquire(), for the caller to log; else None.
        self.takeover: str | None = None
        self._lock_fd: int | None = None
        self._lock_is_real = False
        self._record: dict[str, Any] | None = None

    @property
    def held(self) -> bool:
        """Whether acquire() succeeded and release() has not been called since."""
        return self._record is not None

    # -- acquire -------------------------------------------------------------------------

    def acquire(self) -> str | None:
        """Take the lease or raise LeaseHeldError naming the holder; returns the takeover note.

        Raises LeaseHeldError when another process holds the lock, when a different host has a
        fresh heartbeat, or when a live process on this host holds it.
        """
        if self.held:
            return self.takeover
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock()
        try:
            self.takeover = self._check_existing(_read_lease_file(self.lease_path))
            self._record = self._new_record()
            self._write(self._record)
        except BaseException:
            self._record = None
            self._unlock()
            raise
        if self.takeover:
            log.warning("lease_takeover", note=self.takeover, lease_file=str(self.lease_path))
        return self.takeover

    def _lock(self) -> None:
        # 0600 whatever the umask, like every file in the state directory (statedir.py).
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, 0o600)
        except OSError as exc:
            log.warning("lease_lock_chmod_failed", lock_file=str(self.lock_path), error=str(exc))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LeaseHeldError(
                f"state directory {self.state_dir} is in use: "
                + describe_holder(_read_lease_file(self.lease_path), self.lease_path)
            ) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                os.close(fd)
                raise
            # Lustre without -o flock answers ENOSYS; some NFS setups ENOLCK. The heartbeat
            # file still keeps a second daemon out, only with a window at start-up.
            log.warning("lease_lock_unsupported", lock_file=str(self.lock_path), error=str(exc))
            self._lock_fd, self._lock_is_real = fd, False
            return
        self._lock_fd, self._lock_is_real = fd, True

    def _unlock(self) -> None:
        if self._lock_fd is None:
            return
        fd, self._lock_fd = self._lock_fd, None
        try:
            if self._lock_is_real:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _check_existing(self, holder: dict[str, Any] | None) -> str | None:
        """None when the lease is free, a takeover note when stale; raises when it is held."""
        if holder is None:
            return None
        if not holder:
            return f"replaced an unreadable lease file {self.lease_path}"
        refuse = LeaseHeldError(
            f"state directory {self.state_dir} is in use: "
            + describe_holder(holder, self.lease_path)
        )
        host, pid = holder.get("host"), holder.get("pid")
        age = heartbeat_age_s(holder)
        fresh = age is not None and age <= self.stale_after_s
        if host != self.hostname:
            if fresh:
                raise refuse
            return (
                f"took over a stale lease from pid {pid} on host {host} "
                f"(last heartbeat {'unknown' if age is None else f'{age:.0f}s'} ago, "
                f"stale after {self.stale_after_s:.0f}s)"
            )
        start = holder.get("pid_start_time")
        pid_int = pid if isinstance(pid, int) else None
        if pid_int == os.getpid() and start == process_start_time(os.getpid()):
            return None  # our own leftover (a Lease not released in this process)
        if is_same_process(pid_int, start if isinstance(start, int) else None):
            # Holding the flock proves that live process no longer holds the lock, so with a
            # stale heartbeat it is no longer a working daemon. Without a working flock we
            # cannot know that: refuse rather than run twice.
            if fresh or not self._lock_is_real:
                raise refuse
            return (
                f"took over a lease from live pid {pid} on this host, which no longer holds "
                f"the lock and has not sent a heartbeat for over {self.stale_after_s:.0f}s"
            )
        return f"took over the lease of pid {pid} on this host, which is no longer running"

    # -- heartbeat / release --------------------------------------------------------------

    def heartbeat(self) -> None:
        """Rewrite the lease with a fresh heartbeat_at, after checking we still own it.

        Raises LeaseHeldError (and gives up the lock) when another daemon has taken the lease
        over: the daemon must stop scheduling at once. Raises RuntimeError if not acquired.
        """
        if self._record is None:
            raise RuntimeError("heartbeat() on a lease that is not held; call acquire() first")
        current = _read_lease_file(self.lease_path)
        if current and current.get("lease_id") != self._record["lease_id"]:
            self._record = None
            self._unlock()
            raise LeaseHeldError(
                f"lost the lease on state directory {self.state_dir}: now "
                + describe_holder(current, self.lease_path)
            )
        if current is None:
            log.warning("lease_file_vanished", lease_file=str(self.lease_path))
        self._record["heartbeat_at"] = _iso(_now())
        self._write(self._record)

    def release(self) -> None:
        """Remove the lease file (if still ours) and drop the lock; safe to call twice."""
        record, self._record = self._record, None
        try:
            if record is not None:
                current = _read_lease_file(self.lease_path)
                if current is not None and current.get("lease_id") == record["lease_id"]:
                    with contextlib.suppress(FileNotFoundError):
                        self.lease_path.unlink()
        finally:
            self._unlock()

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    # -- file writing ---------------------------------------------------------------------

    def _new_record(self) -> dict[str, Any]:
        now = _iso(_now())
        return {
            "host": self.hostname,
            "pid": os.getpid(),
            "pid_start_time": process_start_time(os.getpid()),
            "started_at": now,
            "heartbeat_at": now,
            "version": __version__,
            "lease_id": uuid.uuid4().hex,
        }

    def _write(self, record: dict[str, Any]) -> None:
        """Write atomically: a reader on any node sees the old file or the new, never half."""
        atomic.write_json(self.lease_path, record, 0o600, indent=2)
