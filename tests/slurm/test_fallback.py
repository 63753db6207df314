"""The fallback of a stalled queue on the private Slurm cluster. Its ``gpu`` partition stands for
a GPU queue: one CPU of the node (tests/slurm/cluster.sh), so one task runs there and the others
wait with Reason=Resources; a test may also set it DOWN. The fallback resources are the
``batch`` partition."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DaemonHarness, wait_for
from tests.slurm.conftest import SlurmCluster
from tests.slurm.test_executor import (
    manifest,
    slurm_calls,
    slurm_daemon,
    slurm_jobs_tagged,
    tag,
    trigger,
    wait_end,
    wait_state,
)

__all__ = ["slurm_daemon"]  # the fixture, imported for pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def gpu_down(slurm_cluster: SlurmCluster) -> Iterator[None]:
    """The ``gpu`` partition DOWN (jobs queue, none starts) for one test, UP again after."""
    slurm_cluster.run("scontrol", "update", "PartitionName=gpu", "State=DOWN")
    try:
        yield
    finally:
        slurm_cluster.run("scontrol", "update", "PartitionName=gpu", "State=UP")


def _ran(path: Path) -> list[dict[str, str]]:
    """One mapping per task start the command recorded: task, fallback flag, partition."""
    return [dict(i.split("=", 1) for i in line.split()) for line in path.read_text().splitlines()]


def test_tasks_pending_too_long_finish_on_the_fallback_partition_and_none_runs_twice(
    slurm_daemon: DaemonHarness, tmp_path: Path
) -> None:
    """Four tasks on the one-CPU ``gpu`` queue: task 0 starts there, 1-3 wait (Resources). With
    no task started for 3 s they are held, cancelled and submitted to ``batch`` as one fallback
    array; task 0 finishes where it started. Each task ran once; the record says which ran on
    the fallback and why; `status` showed the switch while the run went on."""
    h = slurm_daemon
    ran = tmp_path / "ran.txt"
    script = (
        f'echo "task=$ORCH_ARRAY_TASK_ID fallback=${{ORCH_FALLBACK:-0}} '
        f'partition=$SLURM_JOB_PARTITION" >> {ran}; sleep 6'
    )
    slurm = {
        "partition": "gpu",
        "array": "0-3%4",
        "fallback": {"after": "3s", "partition": "batch"},
    }
    h.write("gpujob.yaml", manifest("gpujob", script, slurm=slurm))
    h.start(extra_env={"ORCH_SLURM_POLL_MAX_S": "0.5"})  # the move: 3-3.5 s into task 0's 6 s
    run_id = trigger(h, "gpujob")
    wait_state(h, run_id, "running", 30)
    status_lines: list[str] = []
    for _ in range(60):
        out = h.cli("status").stdout
        if "fallback" in out:
            status_lines = [line for line in out.splitlines() if "fallback" in line]
            break
        wait_state(h, run_id, "running", 5)
    run = wait_end(h, run_id, 90)
    assert run["state"] == "succeeded", run
    starts = _ran(ran)
    assert sorted(r["task"] for r in starts) == ["0", "1", "2", "3"], starts  # each once
    by_task = {r["task"]: r for r in starts}
    assert by_task["0"] == {"task": "0", "fallback": "0", "partition": "gpu"}
    for task in ("1", "2", "3"):
        assert by_task[task] == {"task": task, "fallback": "1", "partition": "batch"}
    fallback = run["result"]["fallback"]
    assert fallback["tasks"] == ["1", "2", "3"]
    assert "no task started for" in fallback["reason"]
    assert "Resources" in fallback["reason"]
    assert run["result"]["tasks"]["1"]["fallback"] is True
    assert "fallback" not in run["result"]["tasks"]["0"]
    assert "tasks 1,2,3 ran on the fallback resources" in run["message"]
    assert status_lines, "status never showed the fallback"
    assert "tasks 1,2,3 moved to the fallback resources" in status_lines[0], status_lines
    calls = slurm_calls(h)
    holds = [c for c in calls if c[1] == "scontrol" and c[2].startswith("uhold")]
    assert len(holds) == 1
    sbatch_args = [c[2] for c in calls if c[1] == "sbatch"]
    assert len(sbatch_args) == 2, sbatch_args
    assert sbatch_args[1].endswith("job-fallback.sbatch"), sbatch_args
    assert "--array=1,2,3%4" in sbatch_args[1], sbatch_args
    history = h.cli("history", "gpujob").stdout
    assert "fallback" in history


@pytest.mark.usefixtures("gpu_down")
def test_a_down_partition_moves_a_plain_job_at_once(slurm_daemon: DaemonHarness) -> None:
    """A plain job whose partition is DOWN runs on the fallback partition without waiting for
    `after` (one hour here), with ORCH_FALLBACK=1 and the fallback's own options."""
    h = slurm_daemon
    script = 'echo "fallback=${ORCH_FALLBACK:-0} cpus=$SLURM_CPUS_PER_TASK"'
    slurm = {
        "partition": "gpu",
        "cpus_per_task": 1,
        "fallback": {"after": "1h", "partition": "batch", "cpus_per_task": 2},
    }
    h.write("plain.yaml", manifest("plain", script, slurm=slurm))
    h.start()
    run = wait_end(h, trigger(h, "plain"), 60)
    assert run["state"] == "succeeded", run
    assert "PartitionDown" in run["result"]["fallback"]["reason"]
    assert "the job ran on the fallback resources" in run["message"]
    assert h.cli("logs", run["run_id"]).stdout.split() == ["fallback=1", "cpus=2"]
    script_text = (Path(run["run_dir"]) / "job-fallback.sbatch").read_text()
    assert "#SBATCH --partition=batch" in script_text
    assert run["result"]["fallback"]["what"] == "the job"


def test_a_daemon_killed_in_the_middle_of_a_move_finishes_it_after_restart(
    slurm_daemon: DaemonHarness, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """kill -9 of the daemon after it held the pending tasks and before it cancelled them (its
    scancel waits until the daemon is dead, then cancels nothing): the restarted daemon finds
    the move under way in the run's record, cancels the held tasks, submits one fallback job,
    and every task runs once. (CI's accounting stage only: the move is the same without
    accounting, which the other tests here cover.)"""
    if not slurm_cluster.accounting:
        pytest.skip("runs on the cluster with accounting (make test); see the docstring")
    h = slurm_daemon
    ran = tmp_path / "ran.txt"
    marker = tmp_path / "scancel-called"
    script = f'echo "task=$ORCH_ARRAY_TASK_ID fallback=${{ORCH_FALLBACK:-0}}" >> {ran}; sleep 6'
    slurm = {"partition": "gpu", "array": "0-2", "fallback": {"after": "2s", "partition": "batch"}}
    h.write("gpujob.yaml", manifest("gpujob", script, slurm=slurm))
    slow_scancel = {"ORCH_TEST_SCANCEL_SLEEP_S": "30", "ORCH_TEST_SCANCEL_MARKER": str(marker)}
    # polls every 0.5 s: the move comes 2-2.5 s after task 0 started, well before it ends
    h.start(extra_env={**slow_scancel, "ORCH_SLURM_POLL_MAX_S": "0.5"})
    run_id = trigger(h, "gpujob")
    wait_for(marker.exists, 60)
    h.kill9()
    held = slurm_cluster.run("squeue", "-h", "-r", "-o", "%i %r").stdout
    assert "JobHeldUser" in held, held  # the tasks wait, held, for a daemon
    h.start()
    run = wait_end(h, run_id, 90)
    assert run["state"] == "succeeded", run
    starts = _ran(ran)
    assert sorted(r["task"] for r in starts) == ["0", "1", "2"], starts
    assert {r["task"] for r in starts if r["fallback"] == "1"} == {"1", "2"}
    assert len(slurm_jobs_tagged(slurm_cluster, f"{tag(run_id)}-fallback")) == 1
    assert run["result"]["fallback"]["tasks"] == ["1", "2"]


@pytest.mark.usefixtures("gpu_down")
def test_a_fallback_job_that_slurm_refuses_fails_the_run_with_its_message(
    slurm_daemon: DaemonHarness,
) -> None:
    """The fallback names a partition the cluster lacks: the move's sbatch is refused, the job
    fails at once with Slurm's words, and nothing is submitted again."""
    h = slurm_daemon
    slurm = {"partition": "gpu", "fallback": {"after": "1h", "partition": "nope"}}
    h.write("refused.yaml", manifest("refused", "true", slurm=slurm))
    h.start()
    run = wait_end(h, trigger(h, "refused"), 60)
    assert run["state"] == "failed", run
    assert "the job could not move to the fallback resources" in run["message"], run
    assert "invalid partition" in run["message"].lower(), run
    assert len([c for c in slurm_calls(h) if c[1] == "sbatch"]) == 2
