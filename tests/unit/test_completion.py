"""Shell completion: job names for the commands that take a job, run ids (and jobs) for
`logs`, run ids for `cancel`; `completion SHELL` prints the script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from orchestrator.store.sqlite import SQLiteStore
from tests.manifests import job


def _complete(words: str, tmp_path: Path) -> list[str]:
    env = {
        **os.environ,
        "_ORCHESTRATOR_COMPLETE": "bash_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
        "ORCH_JOBS_DIR": str(tmp_path / "jobs.d"),
        "ORCH_STATE_DIR": str(tmp_path / "state"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator"], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    return [line.split(",", 1)[1] for line in done.stdout.splitlines() if "," in line]


def test_jobs_and_runs_complete(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    (jobs / "nightly.yaml").write_text(job("o2-nightly", '["true"]'))
    (jobs / "token.yaml").write_text(job("token", '["true"]'))
    (tmp_path / "state").mkdir(mode=0o700)
    store = SQLiteStore(tmp_path / "state" / "runs.sqlite")
    run = store.create_run("token", "h", "manual")
    store.close()
    assert _complete("orchestrator trigger o2", tmp_path) == ["o2-nightly"]
    assert _complete("orchestrator describe ", tmp_path) == ["o2-nightly", "token"]
    assert _complete("orchestrator cancel 2", tmp_path) == [run.run_id]
    assert _complete("orchestrator logs t", tmp_path) == ["token"]
    assert _complete(f"orchestrator logs {run.run_id[:6]}", tmp_path) == [run.run_id]


def test_completion_prints_the_script() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "completion", "bash"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "_orchestrator_completion()" in done.stdout
    assert "_ORCHESTRATOR_COMPLETE=bash_complete" in done.stdout
