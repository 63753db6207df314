"""How the daemon (or an array task) starts a PhotometryBatch task, for the tests that start
one themselves."""

from __future__ import annotations

import os
import sys
from pathlib import Path

TASK_ARGV = [sys.executable, "-m", "orchestrator.tasks.photometry_batch"]


def task_env(manifest: Path, result: Path, run_id: str, **extra: str) -> dict[str, str]:
    """The task's environment: its manifest, result file, job and run, one Numba thread."""
    return {
        **os.environ,
        "ORCH_TASK_MANIFEST": str(manifest),
        "ORCH_TASK_RESULT": str(result),
        "ORCH_JOB": "sne",
        "ORCH_RUN_ID": run_id,
        "NUMBA_NUM_THREADS": "1",
        **extra,
    }
