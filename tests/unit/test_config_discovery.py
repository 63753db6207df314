"""Where the command line finds the jobs and the state: a command's flag, the global flag,
the environment, orchestrator.toml (./, then ~/.config/orchestrator/), the defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.settings import Settings, SettingsError


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("ORCH_JOBS_DIR", "ORCH_STATE_DIR", "ORCH_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdgstate"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_precedence(clean: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.resolve().state_dir == tmp_path / "xdgstate" / "orchestrator"
    user = tmp_path / "xdg" / "orchestrator"
    user.mkdir(parents=True)
    (user / "orchestrator.toml").write_text('state_dir = "/srv/state"\n')
    assert Settings.resolve().state_dir == Path("/srv/state")
    assert Settings.resolve().jobs_dir == user / "jobs.d"  # not named: the default
    (clean / "orchestrator.toml").write_text('jobs_dir = "jobs.d"\nstate_dir = ".state"\n')
    assert (Settings.resolve().jobs_dir, Settings.resolve().state_dir) == (
        clean / "jobs.d",
        clean / ".state",
    )  # the one here wins over the user's
    monkeypatch.setenv("ORCH_STATE_DIR", str(tmp_path / "env"))
    assert Settings.resolve().state_dir == tmp_path / "env"
    assert Settings.resolve(state_dir=tmp_path / "flag").state_dir == tmp_path / "flag"


def test_a_bad_file_is_named(clean: Path) -> None:
    (clean / "orchestrator.toml").write_text("jobs_dir = 3\n")
    with pytest.raises(SettingsError, match=r"orchestrator.toml:1: jobs_dir: "):
        Settings.resolve()


def test_the_global_flag_reaches_every_command(clean: Path, tmp_path: Path) -> None:
    (clean / "orchestrator.toml").write_text('state_dir = "from-file"\n')

    def status(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            capture_output=True, text=True, timeout=60, cwd=clean, check=False,
        )  # fmt: skip
        return done.stdout.strip().splitlines()[-1]

    assert status("status").endswith(f"(state directory {clean / 'from-file'})")
    assert status("--state-dir", str(tmp_path / "g"), "status").endswith(
        f"(state directory {tmp_path / 'g'})"
    )
    assert status("status", "--state-dir", str(tmp_path / "c")).endswith(
        f"(state directory {tmp_path / 'c'})"
    )
