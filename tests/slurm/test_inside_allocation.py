"""The daemon run as Slurm users on Perlmutter run it: itself inside a Slurm job (a scrontab
job). The jobs it submits must not inherit its allocation: its CPUs, its job id, a partition
its user exported for sbatch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.slurm.conftest import SlurmCluster

pytestmark = pytest.mark.slow

INNER = {
    "apiVersion": "orchestrator/v1",
    "kind": "Command",
    "name": "inner",
    "schedule": {"on": "change"},
    "executor": {"slurm": {"partition": "debug"}},
    "spec": {"command": ["bash", "-c", "env | grep -E '^(SLURM_|SBATCH_)' | sort > {out}"]},
}


def test_a_daemon_inside_a_slurm_job_submits_with_a_clean_environment(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """The daemon runs in a batch job with 2 CPUs on `batch`, SBATCH_PARTITION=nope exported
    (sbatch would read it as --partition): the job it submits is accepted (no 'nope'), runs on
    `debug` under its own id, and sees neither the outer job's id, nor its CPU count, nor the
    exported SBATCH_ variable."""
    jobs, state, out = tmp_path / "jobs.d", tmp_path / "state", tmp_path / "inner-env.txt"
    jobs.mkdir(mode=0o755)
    state.mkdir(mode=0o700)
    manifest = json.loads(json.dumps(INNER).replace("{out}", str(out)))
    (jobs / "inner.yaml").write_text(json.dumps(manifest))
    (jobs / "inner.yaml").chmod(0o644)
    outer = tmp_path / "outer.sh"
    outer.write_text(
        "#!/bin/bash\n"
        f"#SBATCH --partition=batch --cpus-per-task=2 --output={tmp_path}/outer.log\n"
        "export SBATCH_PARTITION=nope ORCH_SLURM_POLL_MIN_S=0.5 ORCH_SLURM_POLL_MAX_S=2\n"
        f"echo outer=$SLURM_JOB_ID > {tmp_path}/outer-id.txt\n"
        f"exec timeout 90 {sys.executable} -m orchestrator run --jobs-dir {jobs} "
        f"--state-dir {state}\n"
    )
    submitted = slurm_cluster.run("sbatch", "--parsable", str(outer))
    outer_id = submitted.stdout.strip().split(";")[0]
    try:
        wait_for(lambda: out.exists() and out.read_text().strip(), 90)
        seen = dict(line.split("=", 1) for line in out.read_text().splitlines())
    finally:
        slurm_cluster.run("scancel", outer_id)
    log = (tmp_path / "outer.log").read_text() if (tmp_path / "outer.log").exists() else ""
    assert (tmp_path / "outer-id.txt").read_text().strip() == f"outer={outer_id}", log
    assert seen["SLURM_JOB_ID"] != outer_id, seen
    assert seen["SLURM_JOB_PARTITION"] == "debug", seen
    assert "SLURM_CPUS_PER_TASK" not in seen, seen
    assert not [k for k in seen if k.startswith("SBATCH_")], seen
