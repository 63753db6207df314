"""O2Sync's source mode through the Slurm executor, as the shipped manifest runs it: a 4-6 h
aliBuild belongs on a compute node, not a login node. Real git, real aliBuild (the tiny recipe
repository of tests/o2sync), a real batch job on the private cluster; the task's result comes
back from the run directory the job shares with the daemon."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import DaemonHarness
from tests.o2sync.conftest import (
    BRANCH,
    PACKAGE,
    Workdir,
    _git_identity,
    manifest,
    require_alibuild,
    source_spec,
    workdir,
)
from tests.slurm.conftest import SlurmCluster
from tests.slurm.test_executor import slurm_daemon, trigger, wait_end

__all__ = ["_git_identity", "slurm_daemon", "workdir"]  # fixtures, imported for pytest

pytestmark = pytest.mark.slow


def test_a_source_build_runs_as_a_batch_job(
    slurm_daemon: DaemonHarness, slurm_cluster: SlurmCluster, workdir: Workdir, tmp_path: Path
) -> None:
    """The first run builds in a batch job on `batch` with 2 CPUs and records the alienv line;
    the second, with nothing moved, skips the build. The batch script is the one kept in the
    run directory (replayable by hand)."""
    doc = manifest(
        "o2src",
        source_spec(workdir, require_alibuild()),
        executor={"slurm": {"partition": "batch", "cpus_per_task": 2, "time": "10m"}},
        policy={"timeout": "15m"},
    )
    slurm_daemon.write("o2src.yaml", yaml.safe_dump(doc))
    slurm_daemon.start()
    first = wait_end(slurm_daemon, trigger(slurm_daemon, "o2src"), 180)
    assert first["state"] == "succeeded", slurm_daemon.cli("logs", first["run_id"]).stdout
    assert first["executor"] == "slurm"
    assert first["result"]["build"] == "built"
    assert first["result"]["alienv"] == f"alienv enter {PACKAGE}/latest-{BRANCH}-o2"
    script = Path(first["run_dir"]) / "job.sbatch"
    text = script.read_text()
    assert "#SBATCH --partition=batch" in text
    assert "#SBATCH --cpus-per-task=2" in text
    assert "orchestrator.tasks.o2sync" in text
    log = slurm_daemon.cli("logs", first["run_id"]).stdout
    assert "aliBuild" in log
    second = wait_end(slurm_daemon, trigger(slurm_daemon, "o2src"), 180)
    assert second["state"] == "succeeded"
    assert second["result"]["build"] == "skipped"
    assert json.loads(slurm_daemon.cli("history", "--json", "o2src").stdout)[0]["executor"] == (
        "slurm"
    )
