"""O2Sync end to end through a real daemon: `plan`, `trigger`, and the task's result and
summary in `history --json` / `status --json`. CVMFS is the directory stand-in and the probe
the stand-in script of conftest; git and aliBuild are real."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import DaemonHarness, wait_for
from tests.o2sync.conftest import (
    BRANCH,
    PACKAGE,
    CvmfsTree,
    Workdir,
    cvmfs_spec,
    manifest,
    require_alibuild,
    source_spec,
)

pytestmark = pytest.mark.daemon

A, B = "daily-20250513-0328-1", "daily-20250514-0328-1"


def _finished(h: DaemonHarness, job: str, run_id: str) -> dict[str, Any] | None:
    for run in h.history(job):
        if run["run_id"] == run_id and run["state"] not in ("pending", "running"):
            return run
    return None


def _trigger_and_wait(h: DaemonHarness, job: str, timeout_s: float = 30) -> dict[str, Any]:
    run_id = h.cli("trigger", job).stdout.strip()
    run: dict[str, Any] = wait_for(lambda: _finished(h, job, run_id), timeout_s)
    return run


def _write(h: DaemonHarness, name: str, spec: dict[str, Any]) -> None:
    h.write(f"{name}.yaml", yaml.safe_dump(manifest(name, spec, description="test")))


def test_cvmfs_job_through_the_daemon(
    daemon: DaemonHarness, cvmfs_tree: CvmfsTree, probe_script: Path, tmp_path: Path
) -> None:
    """`plan` lists the job, `trigger` runs it, and the promoted / previous / rejected tags
    appear in `history --json` results and the run's message in `status --json`."""
    cvmfs_tree.publish(A)
    _write(daemon, "o2cv", cvmfs_spec(cvmfs_tree, probe_script, tmp_path / "ptr"))
    plan = daemon.cli("plan", "--json")
    assert any(row["name"] == "o2cv" for row in json.loads(plan.stdout))
    daemon.start()

    run = _trigger_and_wait(daemon, "o2cv")
    assert run["state"] == "succeeded", daemon.cli("logs", run["run_id"]).stdout
    assert run["message"] == f"promoted {A} (previous none)"
    assert daemon.job_status("o2cv")["last_run"]["result"]["promoted"] == A
    # The daemon merges results as JSON merge patches: a null value is stored as an absent key.
    assert run["result"]["promoted"] == A
    assert run["result"].get("previous") is None
    assert os.readlink(tmp_path / "ptr" / "O2Physics-current") == str(cvmfs_tree.payload(A))
    # the default state dir lives under the daemon's: $ORCH_STATE_DIR/o2sync/<job>
    assert (daemon.state_dir / "o2sync" / "o2cv" / "state.json").exists()

    cvmfs_tree.publish(B, good=False)
    run = _trigger_and_wait(daemon, "o2cv")
    assert run["state"] == "failed"
    assert run["exit_code"] == 1
    assert run["result"]["error"] == "verification_failed"
    assert [r["tag"] for r in run["result"]["rejected"]] == [B]
    assert run["result"]["current"] == A
    last = daemon.job_status("o2cv")["last_run"]
    assert last["run_id"] == run["run_id"]
    assert last["state"] == "failed"
    assert last["message"].startswith(f"no tag promoted: {B} failed verification")
    assert last["result"]["error"] == "verification_failed"
    assert [r["tag"] for r in last["result"]["rejected"]] == [B]
    log = daemon.cli("logs", run["run_id"]).stdout
    assert f"probe {B}: FAILED" in log
    assert "not (fully) published" in log


def test_source_job_through_the_daemon(
    daemon: DaemonHarness, workdir: Workdir, tmp_path: Path
) -> None:
    """A source job triggered twice: the first run builds with the real aliBuild and records the
    alienv line; the second, with nothing moved, skips the build; both results are in
    `history --json`."""
    _write(daemon, "o2src", source_spec(workdir, require_alibuild()))
    daemon.start()
    first = _trigger_and_wait(daemon, "o2src", 60)
    assert first["state"] == "succeeded", daemon.cli("logs", first["run_id"]).stdout
    assert first["result"]["build"] == "built"
    assert first["result"]["alienv"] == f"alienv enter {PACKAGE}/latest-{BRANCH}-o2"
    second = _trigger_and_wait(daemon, "o2src", 60)
    assert second["state"] == "succeeded"
    assert second["result"]["build"] == "skipped"
    assert second["result"]["repos_moved"] == {}
    last = daemon.job_status("o2src")["last_run"]
    assert last["run_id"] == second["run_id"]
    assert "build skipped" in last["message"]
    assert last["result"]["alienv"] == f"alienv enter {PACKAGE}/latest-{BRANCH}-o2"
