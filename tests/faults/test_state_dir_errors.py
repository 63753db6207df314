"""A state directory on a read-only or a full file system (a real tmpfs mounted for the test):
`orchestrator run`, `history` and `status` each say so in one line naming the directory, never
with a traceback."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from orchestrator.store.sqlite import SQLiteStore
from tests.conftest import require

COMMANDS = [["run"], ["history"], ["status"]]


@contextmanager
def _tmpfs(path: Path, options: str) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    require(mounted.returncode == 0, f"permission to mount a tmpfs ({mounted.stderr.strip()})")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(directory: Path) -> None:
    """Write a file into ``directory`` until its file system has no space left."""
    block = b"\0" * 4096

    def write_until_full() -> None:
        with open(directory / "filler", "wb", buffering=0) as fh:
            while fh.write(block):
                pass

    with pytest.raises(OSError, match="No space left") as caught:
        write_until_full()
    assert caught.value.errno == errno.ENOSPC, caught.value
    assert os.statvfs(directory).f_bavail == 0


def _orchestrator(tmp_path: Path, state: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    jobs = tmp_path / "jobs.d"
    jobs.mkdir(mode=0o755, exist_ok=True)
    env = {**os.environ, "ORCH_STATE_DIR": str(state), "ORCH_JOBS_DIR": str(jobs)}
    env["ORCH_LOG_FORMAT"] = "json"
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _assert_one_line(result: subprocess.CompletedProcess[str], state: Path, problem: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(state) in lines[0], lines[0]
    assert problem in lines[0], lines[0]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_read_only_state_dir_with_history_is_one_line(tmp_path: Path, args: list[str]) -> None:
    """A state directory holding a run history, remounted read-only: run, history and status
    each exit non-zero with one stderr line naming the directory and "read-only"."""
    with _tmpfs(tmp_path / "state", "size=1m,mode=0700") as state:
        SQLiteStore(state / "runs.sqlite").close()
        subprocess.run(["mount", "-o", "remount,ro", str(state)], check=True)
        result = _orchestrator(tmp_path, state, args)
    _assert_one_line(result, state, "read-only")


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_full_state_dir_with_history_is_one_line(tmp_path: Path, args: list[str]) -> None:
    """A state directory holding a run history on a full file system: run, history and status
    each exit non-zero with one stderr line naming the directory and that it is full."""
    with _tmpfs(tmp_path / "state", "size=256k,mode=0700") as state:
        SQLiteStore(state / "runs.sqlite").close()
        _fill(state)
        result = _orchestrator(tmp_path, state, args)
    _assert_one_line(result, state, "full")


@pytest.mark.parametrize("options", ["ro,size=64k,mode=0700", "size=64k,mode=0700"])
def test_empty_unusable_state_dir(tmp_path: Path, options: str) -> None:
    """An empty state directory that is read-only or full: `run` fails with one line naming
    it, while `status` and `history` give their usual no-history answers (`status` exits 2:
    no daemon runs)."""
    with _tmpfs(tmp_path / "state", options) as state:
        if "ro" not in options.split(","):
            _fill(state)
        run = _orchestrator(tmp_path, state, ["run"])
        status = _orchestrator(tmp_path, state, ["status"])
        history = _orchestrator(tmp_path, state, ["history"])
    _assert_one_line(run, state, "read-only" if "ro" in options.split(",") else "full")
    assert status.returncode == 2, status.stderr
    assert "Traceback" not in status.stderr, status.stderr
    assert f"no run history in {state}" in status.stdout
    assert status.stdout.splitlines()[-1].startswith("ORCHESTRATOR CRITICAL - the daemon is not")
    assert history.returncode == 0
    assert history.stdout == ""
    assert history.stderr == f"no run history in {state} (no daemon has run with it)\n"
