"""The shipped systemd units: loadable by systemd-analyze, and the deliberate choices kept."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
UNITS = {
    "orchestrator.service": [],
    "orchestrator-user.service": ["--user"],
}


def _settings(unit_text: str) -> dict[str, list[str]]:
    """Active (uncommented) Key=value lines of a unit, as key -> values."""
    found: dict[str, list[str]] = {}
    for raw in unit_text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def _with_runnable_exec_start(unit_text: str) -> str:
    """The unit with ExecStart's program replaced by this interpreter running the package."""
    return re.sub(
        r"(?m)^ExecStart=\S+",
        lambda _: f"ExecStart={sys.executable} -m orchestrator",
        unit_text,
    )


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_systemd_analyze_verify_is_clean(unit: str, tmp_path: Path) -> None:
    """`systemd-analyze verify` reports nothing about the unit (no unknown keys, bad values).

    verify fails when ExecStart's program does not exist, and the shipped units point at
    install locations (/usr/local/bin, ~/.local/share/...) that do not exist on a test
    machine; so a temporary copy with ExecStart pointing at this test's Python interpreter
    (``python -m orchestrator``) is verified instead. Every other line is the shipped one.
    The user unit is verified with ``--user`` against a private XDG_RUNTIME_DIR, because no
    user manager runs here.
    """
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        require(False, "systemd-analyze (Debian package systemd)")
    copy = tmp_path / unit
    copy.write_text(_with_runnable_exec_start((SYSTEMD_DIR / unit).read_text()))
    runtime_dir = tmp_path / "runtime"
    runtime_dir.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime_dir), "SYSTEMD_LOG_COLOR": "0"}
    result = subprocess.run(
        [analyze, *UNITS[unit], "verify", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    output = result.stdout + result.stderr
    about_unit = [line for line in output.splitlines() if unit in line]
    assert about_unit == [], output
    assert result.returncode == 0, output


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_unit_keeps_notify_watchdog_and_shared_tmp(unit: str) -> None:
    """Each unit is Type=notify with a watchdog, and sets neither PrivateTmp nor NoNewPrivileges."""
    settings = _settings((SYSTEMD_DIR / unit).read_text())
    assert settings["Type"] == ["notify"]
    assert settings["NotifyAccess"] == ["main"]
    assert "WatchdogSec" in settings
    assert settings["KillMode"] == ["mixed"]
    assert settings["StateDirectory"] == ["orchestrator"]
    assert "ORCH_STATE_DIR=%S/orchestrator" in settings["Environment"]
    # AliEn tokens in /tmp must be shared with the node; shifter/podman-hpc are setuid.
    assert "PrivateTmp" not in settings
    assert "NoNewPrivileges" not in settings


def test_user_unit_uses_home_and_default_target() -> None:
    """The user unit reads manifests from ~/.config and is wanted by default.target."""
    settings = _settings((SYSTEMD_DIR / "orchestrator-user.service").read_text())
    assert "ORCH_JOBS_DIR=%h/.config/orchestrator/jobs.d" in settings["Environment"]
    assert settings["WantedBy"] == ["default.target"]
    assert "User" not in settings


def test_system_unit_runs_as_an_account_from_etc() -> None:
    """The system unit runs as a named account with manifests from /etc/orchestrator/jobs.d."""
    settings = _settings((SYSTEMD_DIR / "orchestrator.service").read_text())
    assert settings["User"]
    assert settings["Group"]
    assert "--jobs-dir /etc/orchestrator/jobs.d" in settings["ExecStart"][0]
    assert settings["WantedBy"] == ["multi-user.target"]
