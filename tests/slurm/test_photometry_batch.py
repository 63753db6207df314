"""A PhotometryBatch on the private Slurm cluster: the executor runs the batch's plan step,
submits one array with the batch's throttle, each task measures one object, the last collects;
a corrupt object fails its task alone, its retry runs that task alone, and a later run
measures nothing that did not change."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DaemonHarness, wait_for
from tests.slurm.conftest import SlurmCluster
from tests.slurm.test_executor import (
    get_run,
    slurm_daemon,
    slurm_jobs_tagged,
    tag,
    trigger,
    wait_end,
    wait_state,
)

__all__ = ["slurm_daemon"]  # the fixture, imported for pytest

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _with_accounting(slurm_cluster: SlurmCluster) -> None:
    """Run in CI's main stage only: what a batch adds (the plan step, array tasks, collection)
    does not depend on accounting, whose absence the executor's own tests cover in the second
    stage (make test-slurm-noacct), and each of these tests takes 30-40 s."""
    if not slurm_cluster.accounting:
        pytest.skip("batch tests run on the cluster with accounting (make test)")


def _simulate(data: Path) -> Path:
    table = data / "objects.csv"
    for i in (1, 2, 3):
        subprocess.run(
            [
                *(sys.executable, "-m", "orchestrator.dia.cli", "simulate"),
                *("--out", str(data / f"sn{i}"), "--size", "160", "--epochs", "2"),
                *("--templates", "1", "--seed", str(i), "--oid", f"sn{i}", "--table", str(table)),
            ],
            check=True,
            capture_output=True,
        )
    return table


def _batch(table: Path, out: Path, parallel: int, **extra: object) -> str:
    return json.dumps(
        {
            "apiVersion": "orchestrator/v1",
            "kind": "PhotometryBatch",
            "name": "sne",
            "executor": {"slurm": {}},
            **extra,
            "spec": {
                "objects": str(table),
                "output_dir": str(out),
                "parallel": parallel,
                "pipeline": {"builtin": {"backend": "cpu", "cutout": 0}},
            },
        }
    )


def test_a_daemon_killed_mid_batch_finishes_it_after_restart_without_duplicates(
    slurm_daemon: DaemonHarness, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """kill -9 of the daemon while the batch's array runs one task at a time: the array goes
    on in Slurm, the restarted daemon adopts the run, and the batch ends with every object
    measured once, by one array job."""
    h = slurm_daemon
    table = _simulate(tmp_path / "sne")
    h.write("sne.yaml", _batch(table, tmp_path / "results", parallel=1))
    h.start(extra_env={"NUMBA_NUM_THREADS": "1"})
    run_id = trigger(h, "sne")
    wait_state(h, run_id, "running", 120)
    h.kill9()
    h.start(extra_env={"NUMBA_NUM_THREADS": "1"})
    run = wait_end(h, run_id, 300)
    assert run["state"] == "succeeded", run
    assert run["result"]["counts"]["measured"] == 3
    assert {t["state"] for t in run["result"]["tasks"].values()} == {"succeeded"}
    assert len(slurm_jobs_tagged(slurm_cluster, tag(run_id))) == 1
    rows = (Path(run["result"]["output_dir"]) / "summary.csv").read_text().splitlines()
    assert len(rows) == 4  # a header and one row per object


def test_a_batch_is_one_planned_array_and_a_retry_runs_the_failed_task_alone(
    slurm_daemon: DaemonHarness, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """Three objects, sn2's template corrupt: the first run is the array 0-2%2 that its plan
    step named, sn2's task fails alone and the batch is collected (2 measured, 1 failed); the
    retry, after the template is mended, submits task 1 alone and completes the batch (sn1 and
    sn3 reused); a third run measures nothing."""
    h = slurm_daemon
    data = tmp_path / "sne"
    table = _simulate(data)
    template = data / "sn2" / "images" / "template_00.fits"
    good = template.read_bytes()
    template.write_bytes(b"SIMPLE  = garbage")
    out = tmp_path / "results"
    doc = {
        "apiVersion": "orchestrator/v1",
        "kind": "PhotometryBatch",
        "name": "sne",
        "executor": {"slurm": {}},
        "policy": {"retries": 1, "retry_backoff": {"base": "5s", "max": "5s"}},
        "spec": {
            "objects": str(table),
            "output_dir": str(out),
            "parallel": 2,
            "pipeline": {"builtin": {"backend": "cpu", "cutout": 0}},
        },
    }
    h.write("sne.yaml", json.dumps(doc))
    h.start(extra_env={"NUMBA_NUM_THREADS": "1"})
    first_id = trigger(h, "sne")
    # the retry is already scheduled when the first run ends: mend the image before that
    first = wait_end(h, first_id, 300)
    template.write_bytes(good)
    assert first["state"] == "failed", first
    script = (Path(first["run_dir"]) / "job.sbatch").read_text()
    assert "#SBATCH --array=0-2%2" in script
    assert 'export ORCH_ARRAY_TASK_ID="$__orch_task"' in script
    result = first["result"]
    assert result["counts"] == {"measured": 2, "skipped": 0, "failed": 1, "invalid": 0}
    assert sorted(result["tasks"]) == ["0", "1", "2"]  # the executor's per-task outcomes
    assert result["tasks"]["1"]["state"] == "failed"
    assert (Path(result["output_dir"]) / "summary.csv").is_file()
    retry = wait_for(
        lambda: next((r for r in h.history("sne") if r["retry_of"] == first_id), None), 60
    )
    retry = wait_end(h, retry["run_id"], 300)
    assert retry["state"] == "succeeded", retry
    assert "#SBATCH --array=1%2" in (Path(retry["run_dir"]) / "job.sbatch").read_text()
    assert retry["result"]["counts"] == {"measured": 1, "skipped": 2, "failed": 0, "invalid": 0}
    again = wait_end(h, trigger(h, "sne"), 300)
    assert again["state"] == "succeeded", again
    assert again["result"]["counts"]["skipped"] == 3
    assert get_run(h, again["run_id"])["message"] == "3 object-band(s): 3 skipped"
    shutil.rmtree(out, ignore_errors=True)


def test_objects_stuck_in_the_gpu_queue_are_measured_on_the_cpu_partition_once(
    slurm_daemon: DaemonHarness, tmp_path: Path
) -> None:
    """The batch asks for the `gpu` queue (one task at a time, tests/slurm/cluster.sh) with a
    fallback to `batch` after 1 s: the first object is measured where it started, the objects
    still waiting are measured on the fallback resources by the CPU core, each once, and the
    batch's summary says which object was measured where. (The daemon polls every 0.5 s here:
    an object takes about 3 s, and a poll that first sees the next object started restarts the
    fallback's clock: the queue moved.)"""
    h = slurm_daemon
    table = _simulate(tmp_path / "sne")
    executor = {"slurm": {"partition": "gpu", "fallback": {"after": "1s", "partition": "batch"}}}
    doc = json.loads(_batch(table, tmp_path / "results", parallel=3))
    doc["executor"] = executor
    doc["spec"]["pipeline"]["builtin"]["backend"] = "auto"
    h.write("sne.yaml", json.dumps(doc))
    h.start(extra_env={"NUMBA_NUM_THREADS": "1", "ORCH_SLURM_POLL_MAX_S": "0.5"})
    run = wait_end(h, trigger(h, "sne"), 300)
    assert run["state"] == "succeeded", run
    moved = run["result"]["fallback"]["tasks"]
    assert moved, run["result"]
    assert "0" not in moved  # it started on the first-choice queue and stayed there
    plan = json.loads((Path(run["result"]["output_dir"]) / "plan.json").read_text())
    oids = [t["oid"] for t in plan["tasks"]]
    objects = {o["oid"]: o for o in run["result"]["objects"]}
    assert {oid for oid, o in objects.items() if o["fallback"]} == {oids[int(i)] for i in moved}
    assert {o["state"] for o in objects.values()} == {"measured"}
    assert {o["backend"] for o in objects.values()} == {"cpu"}
    logs = "".join(p.read_text() for p in Path(run["run_dir"]).glob("output-*.log"))
    for oid in oids:
        assert logs.count(f"{oid} R062: measured") == 1, logs  # each measured once
    rows = (Path(run["result"]["output_dir"]) / "summary.csv").read_text().splitlines()
    assert rows[0].split(",")[6] == "fallback"
