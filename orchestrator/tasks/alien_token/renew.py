"""Renewal: run ``alien-token-init`` (through its environment wrapper) and say why it failed.

The command runs in its own session with stdin from /dev/null and no controlling terminal, so
a passphrase prompt (from the command itself or from OpenSSL, which opens /dev/tty) cannot
wait for an answer: it fails at once, and the failure is reported as needing a passphrase.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from dataclasses import dataclass

from orchestrator.containers import render_command
from orchestrator.tasks.alien_token.spec import AliEnTokenSpec

_PASSPHRASE = re.compile(r"pass\s?phrase|password", re.IGNORECASE)
OUTPUT_TAIL_LINES = 20


@dataclass(frozen=True)
class InitOutcome:
    ok: bool
    needs_passphrase: bool
    message: str  # what happened, one line
    output_tail: list[str]  # the command's last lines (its messages; never the token)


def init_argv(spec: AliEnTokenSpec, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run ``init_command``: wrapper first, then the container
    (the container runs the wrapper, e.g. shifter -> alienv setenv -> alien-token-init)."""
    argv = [*spec.wrapper, *spec.init_command]
    run_env = {**env, **spec.env}
    return render_command(spec.container, argv, run_env, None)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_init(spec: AliEnTokenSpec, env: dict[str, str]) -> InitOutcome:
    """Run the init command once; never raises for the command's own failures."""
    argv, run_env = init_argv(spec, env)
    name = os.path.basename(spec.init_command[0])
    try:
        proc = subprocess.Popen(
            argv,
            env=run_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        return InitOutcome(False, False, f"cannot start {argv[0]!r}: {exc.strerror}", [])
    try:
        out, _ = proc.communicate(timeout=spec.init_timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, _ = proc.communicate()
        tail = out.decode(errors="replace").splitlines()[-OUTPUT_TAIL_LINES:]
        return InitOutcome(
            False,
            bool(_PASSPHRASE.search("\n".join(tail))),
            f"{name} did not finish within {spec.init_timeout:g} s and was killed",
            tail,
        )
    finally:
        # The wrapper may leave helpers behind (alienv, shifter); the session is the run's.
        _kill_group(proc)
    text = out.decode(errors="replace")
    tail = text.splitlines()[-OUTPUT_TAIL_LINES:]
    if proc.returncode == 0:
        return InitOutcome(True, False, f"{name} exited 0", tail)
    needs_passphrase = bool(_PASSPHRASE.search(text))
    why = (
        "it asked for a passphrase, which cannot be given unattended"
        if needs_passphrase
        else "see its output above"
    )
    return InitOutcome(
        False, needs_passphrase, f"{name} exited with status {proc.returncode}: {why}", tail
    )
