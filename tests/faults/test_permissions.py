"""The state directory is its user's alone whatever the umask: directories 0700, files 0600, the
control socket 0600; while the jobs keep the umask the daemon was started with for their own
files (issue 8, point 7)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from orchestrator.errors import UnsafePermissionsError
from orchestrator.statedir import make_run_dir
from tests.conftest import DaemonHarness, wait_for


def _loose_modes(root: Path) -> list[str]:
    """Every path under ``root`` (itself included) that is not a 0700 directory, a 0600 file
    or a 0600 socket, as 'mode path' lines."""
    wrong = []
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        mode = stat.S_IMODE(info.st_mode)
        expected = 0o700 if stat.S_ISDIR(info.st_mode) else 0o600
        if mode != expected:
            wrong.append(f"{mode:04o} {path}")
    return wrong


def _start_under_umask(daemon: DaemonHarness, umask: int) -> None:
    """Start the real daemon with ``umask`` (a child inherits its parent's umask at fork)."""
    old = os.umask(umask)
    try:
        daemon.start(wait=False)
    finally:
        os.umask(old)
    wait_for(daemon.ready, 20)


def test_state_files_are_private_under_umask_000_and_jobs_keep_the_umask(
    daemon: DaemonHarness, tmp_path: Path
) -> None:
    """With umask 000 and a state directory pre-created 0755, after a run every path under the
    state directory (database, -wal, -shm, lease, runs/, run directory, shim files, log) is 0600
    or 0700, while the file the job wrote in its own workdir is 0666, as umask 000 makes it."""
    daemon.state_dir.mkdir(mode=0o755)
    daemon.state_dir.chmod(0o755)
    workdir = tmp_path / "work"
    workdir.mkdir()
    daemon.write(
        "writer.yaml",
        f"""\
        apiVersion: orchestrator/v1
        kind: Command
        name: writer
        spec:
          command: [sh, -c, "echo data > out.txt; echo logged"]
          workdir: {workdir}
        """,
    )
    _start_under_umask(daemon, 0o000)
    run_id = daemon.cli("trigger", "writer").stdout.strip()
    wait_for(lambda: [r for r in daemon.history("writer") if r["state"] == "succeeded"], 10)
    run_dir = daemon.state_dir / "runs" / run_id
    names = {p.name for p in run_dir.iterdir()}
    assert {"output.log", "shim.json", "child.json", "result.json"} <= names
    assert (daemon.state_dir / "runs.sqlite-wal").exists()  # the daemon holds the store open
    assert _loose_modes(daemon.state_dir) == []
    assert stat.S_IMODE((workdir / "out.txt").stat().st_mode) == 0o666
    daemon.stop()
    assert _loose_modes(daemon.state_dir) == []


def test_a_state_directory_of_another_user_is_refused(daemon: DaemonHarness) -> None:
    """A state directory that belongs to another user is refused at start with a message that
    names it and its owner, rather than used (its owner could read every run)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a directory owned by another user")
    daemon.state_dir.mkdir(mode=0o700)
    os.chown(daemon.state_dir, 65534, 65534)
    daemon.start(wait=False)
    assert daemon.proc is not None
    assert daemon.proc.wait(20) != 0
    log = daemon.log_path.read_text()
    assert f"{daemon.state_dir} belongs to uid 65534" in log
    assert "Traceback" not in log


def test_slurm_spool_and_its_run_directories_are_private(tmp_path: Path) -> None:
    """A run directory is made 0700 whatever the umask; a missing spool directory is created
    0700, an existing one (perhaps a shared $SCRATCH) keeps its mode."""
    old = os.umask(0)
    try:
        existing = tmp_path / "spool"
        existing.mkdir(mode=0o755)
        make_run_dir(existing / "run-1")
        missing = tmp_path / "scratch" / "orchestrator"
        make_run_dir(missing / "run-2")
    finally:
        os.umask(old)
    for path in (existing / "run-1", missing, missing / "run-2"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755


def test_a_run_directory_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    """A run directory's parent that is not a directory is refused with its path named."""
    spool = tmp_path / "spool"
    spool.write_text("")
    with pytest.raises(UnsafePermissionsError, match="spool exists and is not a directory"):
        make_run_dir(spool / "run-1")
