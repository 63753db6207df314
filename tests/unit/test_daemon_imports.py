"""The daemon stays light: the numerical core runs only in child processes."""

from __future__ import annotations

import subprocess
import sys


def test_daemon_and_cli_never_import_the_numerical_core() -> None:
    """Importing the daemon and the command line (as `orchestrator run` does) loads neither
    orchestrator.dia nor numba, numpy or scipy: a JIT compile or a kernel crash can never
    stall scheduling."""
    code = (
        "import sys, orchestrator.cli, orchestrator.daemon\n"
        "print(sorted(m for m in ('orchestrator.dia', 'numba', 'numpy', 'scipy') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert out == "[]"
