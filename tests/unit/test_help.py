"""Help as a newcomer reads it: every command has an example, the command lists cut no line
short, and the main help lists the environment variables."""

from __future__ import annotations

import subprocess
import sys

import pytest

COMMANDS = [
    "run", "validate", "plan", "status", "check", "history", "logs", "trigger", "cancel",
    "reload", "suspend", "resume", "describe", "render", "diff", "usage", "schema",
    "completion", "notify-test", "o2 tags", "o2 rollback", "o2 unreject", "photometry run",
    "photometry simulate",
]  # fmt: skip


def _help(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args, "--help"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_an_example(command: str) -> None:
    assert "Example" in _help(*command.split()), command


@pytest.mark.parametrize("group", [[], ["o2"], ["photometry"]])
def test_command_lists_are_not_cut(group: list[str]) -> None:
    listing = _help(*group).split("Commands:", 1)[1]
    assert "..." not in listing, listing


def test_the_main_help_lists_the_environment() -> None:
    text = _help()
    for name in ("ORCH_JOBS_DIR", "ORCH_FORCE_POLLING", "ORCH_SLURM_CMD_TIMEOUT_S"):
        assert name in text
