"""A run store that another process locks, or whose disk fills up, is an outage the daemon
waits out: it logs, shows the problem in `status`, keeps the work that failed and does it once
the store answers. Real SQLite, a real daemon, a real (small, full) tmpfs."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DaemonHarness, require, wait_for
from tests.manifests import job

EVERY_SECOND = job("tick", '["true"]', "schedule: {every: 1s}")
MANUAL = job("manual", '["true"]')

# Another process takes the write lock and holds it (BEGIN EXCLUSIVE in WAL mode blocks writers,
# not readers), longer than the daemon's 5 s busy timeout.
_HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


def _hold_lock(daemon: DaemonHarness, seconds: float) -> subprocess.Popen[str]:
    """Another process that holds the store's write lock for ``seconds`` (returns once held)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(daemon.state_dir / "runs.sqlite"), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    return holder


def _failures(daemon: DaemonHarness) -> list[dict[str, object]]:
    bad = {"event_failed", "daemon_step_failed", "control_request_failed"}
    return [e for e in daemon.events() if e.get("event") in bad]


def test_write_lock_held_longer_than_busy_timeout_is_waited_out(daemon: DaemonHarness) -> None:
    """With the store's write lock held by another process for 8 s, the daemon stays up, status
    says the store is unavailable, and the schedule goes on once the lock is released."""
    daemon.write("tick.yaml", EVERY_SECOND)
    daemon.start()
    wait_for(lambda: daemon.history("tick"), 10)
    holder = _hold_lock(daemon, 8)
    try:
        locked_at = time.time()
        seen = wait_for(
            lambda: (daemon.status()["daemon"].get("store") or {}).get("ok") is False, 20
        )
        assert seen
        shown = daemon.cli("status", check=False)
        assert "run store unavailable" in shown.stdout
        assert shown.returncode == 1  # degraded, and the last line says why
        assert shown.stdout.splitlines()[-1].startswith("ORCHESTRATOR WARNING - ")
        assert holder.wait(20) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    released_at = time.time()
    # Back to normal: the store is healthy again and new runs are recorded.
    wait_for(lambda: daemon.status()["daemon"]["store"]["ok"], 90)
    wait_for(
        lambda: any(
            r["state"] == "succeeded"
            and r["created_at"] > time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(released_at))
            for r in daemon.history("tick")
        ),
        30,
    )
    assert daemon.proc is not None
    assert daemon.proc.poll() is None
    names = [e.get("event") for e in daemon.events()]
    assert "store_unavailable" in names
    assert "store_recovered" in names
    assert _failures(daemon) == []
    assert locked_at < released_at


def test_store_locked_at_start_is_waited_for(daemon: DaemonHarness) -> None:
    """A daemon that starts while another process holds the store's lock waits for it (and
    says so) instead of exiting."""
    daemon.write("manual.yaml", MANUAL)
    daemon.start()
    daemon.stop()
    holder = _hold_lock(daemon, 9)
    try:
        daemon.start(wait=False)
        wait_for(
            lambda: any(
                e.get("event") == "store_unavailable" and e.get("step") == "open"
                for e in daemon.events()
            ),
            30,
        )
        assert daemon.proc is not None
        assert daemon.proc.poll() is None
    finally:
        holder.wait(30)
    wait_for(daemon.ready, 60)
    run_id = daemon.cli("trigger", "manual").stdout.strip()
    wait_for(lambda: daemon.history("manual")[0]["state"] == "succeeded", 20)
    assert daemon.history("manual")[0]["run_id"] == run_id


def _mount_tmpfs(where: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
    )
    return done.returncode == 0


def _fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` to the last byte."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (65536, 512, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * chunk):
                    pass
    finally:
        os.close(fd)
    return filler


def test_full_disk_under_the_state_dir_is_an_outage_not_a_crash(tmp_path: Path) -> None:
    """With the state dir's file system full, triggers fail with one clear line, the daemon
    stays up and reports the store problem, and once space is freed runs are recorded again."""
    state = tmp_path / "state"
    require(_mount_tmpfs(state, "3m"), "root and mount -t tmpfs (run the suite as root)")
    daemon = DaemonHarness(tmp_path)
    try:
        daemon.write("manual.yaml", MANUAL)
        daemon.start()
        first = daemon.cli("trigger", "manual").stdout.strip()
        wait_for(lambda: daemon.history("manual")[0]["state"] == "succeeded", 20)
        filler = _fill(state)
        # Writes now fail: whatever the daemon touches first (a run's directory, the store),
        # the trigger is answered with one line, never a traceback, and the daemon lives.
        outcomes = []
        for _ in range(3):
            result = daemon.cli("trigger", "manual", check=False)
            outcomes.append(result)
            assert "Traceback" not in result.stderr
            time.sleep(0.5)
        assert daemon.proc is not None
        assert daemon.proc.poll() is None
        assert any(
            r.returncode != 0 or "failed" in {h["state"] for h in daemon.history("manual")}
            for r in outcomes
        )
        status = daemon.cli("status", check=False)
        assert status.returncode in (0, 1)
        assert "Traceback" not in status.stderr
        filler.unlink()
        wait_for(lambda: daemon.status()["daemon"]["store"]["ok"], 90)
        run_id = wait_for(
            lambda: (
                (r := daemon.cli("trigger", "manual", check=False)).returncode == 0
                and r.stdout.strip()
            ),
            30,
            interval_s=1,
        )
        wait_for(
            lambda: (
                next(h for h in daemon.history("manual") if h["run_id"] == run_id)["state"]
                == "succeeded"
            ),
            20,
        )
        assert run_id != first
        assert daemon.proc.poll() is None
        assert _failures(daemon) == []
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
        subprocess.run(["umount", "-l", str(state)], capture_output=True)


def test_store_errors_are_store_unavailable(tmp_path: Path) -> None:
    """A locked database surfaces as StoreUnavailableError (a StoreError), which the daemon
    waits out, not as a bare sqlite3 error."""
    from orchestrator.errors import StoreUnavailableError
    from orchestrator.store import sqlite as store_sqlite

    db = tmp_path / "runs.sqlite"
    store = store_sqlite.SQLiteStore(db)
    other = sqlite3.connect(db, isolation_level=None, timeout=0)
    other.execute("BEGIN EXCLUSIVE")
    try:
        store._conn.execute("PRAGMA busy_timeout = 100")
        with pytest.raises(StoreUnavailableError, match="locked"):
            store.set_job_state("job", "key", 1)
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.set_job_state("job", "key", 2)  # usable again once the lock is gone
    assert store.get_job_state("job", "key") == 2
    store.close()
