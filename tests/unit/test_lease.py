"""The daemon lease: flock plus heartbeat file, exercised with real second processes."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestrator.errors import LeaseHeldError
from orchestrator.lease import LEASE_NAME, Lease, read_holder

REPO_ROOT = Path(__file__).resolve().parents[2]

HOLDER_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from orchestrator.lease import Lease

    lease = Lease(Path(sys.argv[1]))
    lease.acquire()
    print("acquired", flush=True)
    sys.stdin.readline()  # hold until the test says so
    lease.release()
    print("released", flush=True)
    """
)


class Holder:
    """A real second python process that acquires the lease and holds it until told."""

    def __init__(self, state_dir: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "ORCH_LOG_LEVEL": "error"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER_SCRIPT, str(state_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "acquired", f"holder failed to start: {line!r}"

    def release(self) -> None:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "released"
        self.proc.wait(timeout=10)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[Holder]:
    h = Holder(tmp_path)
    yield h
    h.close()


def _write_lease(state_dir: Path, **fields: object) -> None:
    now = datetime.now(UTC)
    record: dict[str, object] = {
        "host": socket.gethostname(),
        "pid": 999_999_999,
        "pid_start_time": 1,
        "started_at": (now - timedelta(hours=1)).isoformat(),
        "heartbeat_at": now.isoformat(),
        "version": "0.0.0",
        "lease_id": "someone-else",
    }
    record.update(fields)
    (state_dir / LEASE_NAME).write_text(json.dumps(record))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=10)
    return proc.pid


def test_second_process_is_refused_with_holder_named(holder: Holder, tmp_path: Path) -> None:
    """While another process holds the lease, acquire() fails naming its host, pid and file."""
    with pytest.raises(LeaseHeldError) as caught:
        Lease(tmp_path).acquire()
    message = str(caught.value)
    assert f"pid {holder.proc.pid}" in message
    assert socket.gethostname() in message
    assert str(tmp_path / LEASE_NAME) in message
    assert "last heartbeat" in message
    assert "since" in message


def test_release_lets_the_next_one_in(holder: Holder, tmp_path: Path) -> None:
    """After the holder releases, the lease file is gone and the next daemon acquires cleanly."""
    holder.release()
    assert read_holder(tmp_path) is None
    lease = Lease(tmp_path)
    assert lease.acquire() is None
    assert lease.takeover is None
    lease.release()


def test_crashed_holder_is_taken_over(holder: Holder, tmp_path: Path) -> None:
    """A holder killed with SIGKILL leaves a fresh lease file that the next start takes over."""
    holder.kill()
    assert read_holder(tmp_path) is not None  # left behind by the crash
    lease = Lease(tmp_path)
    note = lease.acquire()
    assert note is not None
    assert str(holder.proc.pid) in note
    assert "no longer running" in note
    assert read_holder(tmp_path)["pid"] == os.getpid()  # type: ignore[index]
    lease.release()


def test_stale_lease_from_dead_pid_is_taken_over(tmp_path: Path) -> None:
    """A lease file from a dead pid on this host is taken over with a note naming that pid."""
    pid = _dead_pid()
    _write_lease(tmp_path, pid=pid)
    lease = Lease(tmp_path)
    note = lease.acquire()
    assert note is not None
    assert f"pid {pid}" in note
    holder = read_holder(tmp_path)
    assert holder is not None
    assert holder["pid"] == os.getpid()
    lease.release()


def test_reused_pid_is_not_mistaken_for_the_holder(tmp_path: Path) -> None:
    """A live pid whose start time differs from the recorded one is treated as a dead holder."""
    _write_lease(tmp_path, pid=os.getppid(), pid_start_time=-1)
    lease = Lease(tmp_path)
    assert lease.acquire() is not None
    lease.release()


def test_fresh_lease_from_other_host_is_refused(tmp_path: Path) -> None:
    """A fresh heartbeat from another host refuses the start even though the flock is free."""
    _write_lease(tmp_path, host="login07.example", pid=4242)
    with pytest.raises(LeaseHeldError, match=r"pid 4242 on host login07\.example"):
        Lease(tmp_path).acquire()
    # The refused attempt must not have left the lock held or the file changed.
    with open(tmp_path / "daemon.lock") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    holder = read_holder(tmp_path)
    assert holder is not None
    assert holder["host"] == "login07.example"


def test_stale_lease_from_other_host_is_taken_over(tmp_path: Path) -> None:
    """Another host's lease whose heartbeat is older than stale_after_s is taken over."""
    old = datetime.now(UTC) - timedelta(seconds=120)
    _write_lease(tmp_path, host="login07.example", pid=4242, heartbeat_at=old.isoformat())
    lease = Lease(tmp_path, heartbeat_s=10)
    note = lease.acquire()
    assert note is not None
    assert "login07.example" in note
    assert "stale" in note
    lease.release()


def test_live_holder_in_same_process_is_refused(tmp_path: Path) -> None:
    """A second Lease object on the same directory is refused while the first is held."""
    first = Lease(tmp_path)
    first.acquire()
    try:
        with pytest.raises(LeaseHeldError, match=f"pid {os.getpid()}"):
            Lease(tmp_path).acquire()
    finally:
        first.release()


def test_heartbeat_refreshes_and_read_holder_reports(tmp_path: Path) -> None:
    """heartbeat() moves heartbeat_at forward; read_holder() gives all fields and the age."""
    with Lease(tmp_path / "state") as lease:
        before = read_holder(lease.state_dir)
        assert before is not None
        lease.heartbeat()
        after = read_holder(lease.state_dir)
        assert after is not None
        assert set(after) >= {
            "host",
            "pid",
            "pid_start_time",
            "started_at",
            "heartbeat_at",
            "version",
            "heartbeat_age_s",
            "path",
        }
        assert after["heartbeat_at"] >= before["heartbeat_at"]
        assert after["started_at"] == before["started_at"]
        assert 0 <= after["heartbeat_age_s"] < 5
    assert read_holder(tmp_path / "state") is None


def test_heartbeat_detects_takeover_by_other_host(tmp_path: Path) -> None:
    """When another host has taken the lease over, heartbeat() raises and frees the lock."""
    lease = Lease(tmp_path)
    lease.acquire()
    _write_lease(tmp_path, host="login12.example", pid=777)
    with pytest.raises(LeaseHeldError, match=r"lost the lease.*pid 777 on host login12\.example"):
        lease.heartbeat()
    assert not lease.held
    lease.release()  # harmless after losing it, and must not delete the new holder's file
    holder = read_holder(tmp_path)
    assert holder is not None
    assert holder["host"] == "login12.example"
