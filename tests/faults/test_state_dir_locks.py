"""A state directory whose file system does not keep POSIX locks is refused at start (SQLite's
only guard against two writers), unless forced; on a local disk the probe passes, and a
second process really is refused the lock; on a network file system (sshfs on loopback) the
store keeps a rollback journal."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.fsinfo import is_network_filesystem
from orchestrator.locks import probe
from orchestrator.store.base import RunState
from orchestrator.store.sqlite import SQLiteStore
from tests.alien_token.conftest import LoopbackSshd, sshd
from tests.conftest import DaemonHarness, require, wait_for
from tests.manifests import job

__all__ = ["sshd"]  # the loopback sshd fixture, imported for pytest

pytestmark = pytest.mark.faults


def test_on_a_local_disk_locks_work_and_exclude(tmp_path: Path) -> None:
    assert probe(tmp_path) is None
    assert list(tmp_path.iterdir()) == []  # its scratch file is gone


def _no_locks(fd: int, op: int) -> None:
    """lockf as on a file system without POSIX locks (an NFS mount without lockd answers
    ENOLCK). Such a file system cannot be mounted here: this stands in for its answer."""
    raise OSError(errno.ENOLCK, "No locks available")


def _lock_for_everyone(fd: int, op: int) -> None:
    """lockf that grants every lock and holds none, as a file system that ignores locks."""
    return None


def test_a_file_system_without_locks_is_named(tmp_path: Path) -> None:
    assert probe(tmp_path, _no_locks) == (
        "a POSIX lock cannot be taken there (ENOLCK: No locks available)"
    )
    assert probe(tmp_path, _lock_for_everyone) == (
        "a second process was given a lock this one holds: locks do not exclude"
    )


RUN_WITHOUT_LOCKS = """
import sys
from orchestrator import locks
from orchestrator.cli import main
def no_locks(fd, op):
    raise OSError(38, "Function not implemented")
real = locks.probe
locks.probe = lambda d, lockf=None: real(d, no_locks)
sys.argv = ["orchestrator", "run"]
main()
"""


def test_the_daemon_refuses_such_a_state_dir_unless_forced(daemon: DaemonHarness) -> None:
    daemon.write("a.yaml", job("a", '["true"]'))
    env = daemon.env()
    refused = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_LOCKS], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert refused.returncode == 1, refused.stderr
    said = refused.stderr.strip().splitlines()[-1]
    assert str(daemon.state_dir) in said
    assert "a POSIX lock cannot be taken there (ENOSYS" in said
    assert "ORCH_STATE_DIR_FORCE=1" in said
    assert not (daemon.state_dir / "runs.sqlite").exists()  # nothing was written
    forced = subprocess.Popen(
        [sys.executable, "-c", RUN_WITHOUT_LOCKS],
        env={**env, "ORCH_STATE_DIR_FORCE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=open(daemon.root / "forced.log", "w"),  # noqa: SIM115
    )
    try:
        wait_for(lambda: daemon.cli("status", "--json", check=False).returncode in (0, 1), 20)
    finally:
        forced.terminate()
        forced.wait(30)
    assert "state_dir_without_locks_forced" in (daemon.root / "forced.log").read_text()


def test_on_a_network_file_system_the_store_uses_a_rollback_journal(
    sshd: LoopbackSshd, tmp_path: Path
) -> None:
    """The run store in a directory on sshfs (FUSE over the loopback sshd: a network file
    system whose locks the kernel keeps locally, so the probe passes) keeps a rollback journal
    (no WAL, whose shared memory only one host shares), and `history`, another process, reads
    what it wrote. (A daemon cannot run there: sshfs cannot hold the control socket, where
    GPFS and NFS can.)"""
    require(shutil.which("sshfs") is not None, "sshfs (scripts/sshd-deps.sh installs it)")
    require(os.path.exists("/dev/fuse"), "/dev/fuse (FUSE)")
    remote, mount = tmp_path / "remote", tmp_path / "mnt"
    remote.mkdir()
    mount.mkdir()
    mounted = subprocess.run(
        [
            "sshfs", f"{sshd.user}@127.0.0.1:{remote}", str(mount), "-p", str(sshd.port),
            "-o", f"IdentityFile={sshd.client_key},IdentitiesOnly=yes,"
            f"UserKnownHostsFile={sshd.known_hosts},StrictHostKeyChecking=yes",
        ],
        check=False, timeout=30, capture_output=True, text=True,
    )  # fmt: skip
    assert mounted.returncode == 0, mounted.stderr
    try:
        state = mount / "state"
        state.mkdir(mode=0o700)
        assert is_network_filesystem(state)
        assert probe(state) is None
        store = SQLiteStore(state / "runs.sqlite")
        try:
            assert store.journal_mode() == "delete"
            run = store.create_run("a", "h", "manual")
            store.finish_run(run.run_id, RunState.SUCCEEDED, exit_code=0)
        finally:
            store.close()
        assert not (state / "runs.sqlite-wal").exists()
        shown = subprocess.run(
            [sys.executable, "-m", "orchestrator", "history", "--json", "--state-dir", str(state)],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert [(r["run_id"], r["state"]) for r in json.loads(shown.stdout)] == [
            (run.run_id, "succeeded")
        ]
    finally:
        subprocess.run(["fusermount3", "-u", str(mount)], timeout=30, check=False)
