"""The Slurm executor under failure: controller down, controller hung during sbatch, daemon
killed between sbatch and recording the job id. Each test restores the shared cluster."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import DaemonHarness, wait_for
from tests.slurm.conftest import SlurmCluster
from tests.slurm.test_executor import (
    get_run,
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


def sbatch_count(h: DaemonHarness) -> int:
    return len([c for c in slurm_calls(h) if c[1] == "sbatch"])


def test_controller_outage_pauses_submission_and_fails_nothing(
    slurm_daemon: DaemonHarness, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """With slurmctld stopped the daemon keeps running, fails no run, opens its breaker and
    holds a newly triggered run unsubmitted; after slurmctld restarts, the job that ended during
    the outage and the held run are both recorded with their real end states."""
    h = slurm_daemon
    # Client calls give up after 3 s instead of Slurm's MessageTimeout-1 s (9 s here), so that
    # three consecutive failures open the breaker in seconds.
    h.extra_env["ORCH_SLURM_CMD_TIMEOUT_S"] = "3"
    release = tmp_path / "release"
    h.write("held.yaml", manifest("held", f"while [ ! -e {release} ]; do sleep 0.2; done; exit 4"))
    h.write("later.yaml", manifest("later", "echo later-ran"))
    h.start()
    held_id = trigger(h, "held")
    wait_state(h, held_id, "running", 30)
    slurm_cluster.stop_ctld()
    try:
        later_id = trigger(h, "later")
        health = wait_for(
            lambda: (s := h.status()["daemon"]["executors"]["slurm"])["breaker"] == "open" and s,
            45,
            0.3,
        )
        assert health["last_error"]
        release.touch()  # the held job ends while the controller is down
        paused_at = sbatch_count(h)
        time.sleep(4)  # two poll cycles at ORCH_SLURM_POLL_MAX_S=2
        assert sbatch_count(h) == paused_at, "sbatch was called while the breaker was open"
        assert h.proc is not None
        assert h.proc.poll() is None
        states = {r["run_id"]: r["state"] for r in h.history()}
        assert states == {held_id: "running", later_id: "pending"}
        assert get_run(h, later_id)["executor_data"].get("slurm_job_id") is None
        assert h.status()["daemon"]["executors"]["slurm"]["awaiting_submission"] == 1
    finally:
        slurm_cluster.start_ctld()
    held, later = wait_end(h, held_id, 60), wait_end(h, later_id, 60)
    assert (held["state"], held["exit_code"]) == ("failed", 4), held
    assert (later["state"], later["exit_code"]) == ("succeeded", 0), later
    assert "later-ran" in h.cli("logs", later_id).stdout
    assert len(slurm_jobs_tagged(slurm_cluster, tag(later_id))) == 1
    assert h.status()["daemon"]["executors"]["slurm"]["breaker"] == "closed"


def test_hung_controller_during_sbatch_yields_one_job(
    slurm_daemon: DaemonHarness, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """With slurmctld suspended (SIGSTOP) sbatch times out although the job gets created; after
    SIGCONT the daemon finds that job by its tag instead of submitting again: one job, run once."""
    h = slurm_daemon
    # The client's own limit (45 s by default) stays above MessageTimeout (10 s in the test
    # cluster), so sbatch itself gives up with "Socket timed out", as on a real hung controller.
    ran = tmp_path / "ran"
    h.write("once.yaml", manifest("once", f'echo "$SLURM_JOB_ID" >> {ran}'))
    h.start()
    slurm_cluster.suspend_ctld()
    try:
        run_id = trigger(h, "once")
        wait_for(lambda: any(e.get("event") == "slurm_submit_failed" for e in h.events()), 45, 0.3)
    finally:
        slurm_cluster.resume_ctld()
    failed = next(e for e in h.events() if e.get("event") == "slurm_submit_failed")
    assert failed["ambiguous"] is True, failed
    assert "timed out" in failed["error"].lower(), failed
    run = wait_end(h, run_id, 60)
    assert run["state"] == "succeeded", run
    jobs = slurm_jobs_tagged(slurm_cluster, tag(run_id))
    assert jobs == {run["executor_data"]["slurm_job_id"]}
    assert ran.read_text().split() == list(jobs)
    assert len(list(Path(run["run_dir"]).glob("started.*"))) == 1
    assert any(e.get("event") == "slurm_job_found_by_tag" for e in h.events())
    assert sbatch_count(h) == 1


def test_kill9_between_sbatch_and_recording_the_id_yields_one_job(
    slurm_daemon: DaemonHarness, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """A daemon killed with SIGKILL after sbatch created the job but before the id was recorded
    (a wrapper sbatch holds the answer back) is restarted: it adopts the job by its tag, submits
    nothing, and records the run's real end."""
    h = slurm_daemon
    marker = tmp_path / "sbatch-answered"
    ran = tmp_path / "ran"
    h.write("once.yaml", manifest("once", f'echo "$SLURM_JOB_ID" >> {ran}; exit 0'))
    h.start(extra_env={"ORCH_TEST_SBATCH_SLEEP_S": "30", "ORCH_TEST_SBATCH_MARKER": str(marker)})
    run_id = trigger(h, "once")
    wait_for(marker.exists, 30, 0.05)
    _wrapper_pid, job_id = marker.read_text().split()
    h.kill9()  # the wrapper notices its parent is gone and exits without answering
    assert get_run(h, run_id)["executor_data"].get("slurm_job_id") is None
    assert get_run(h, run_id)["executor_data"].get("submit_attempted_at")
    h.start(extra_env={"ORCH_TEST_SBATCH_SLEEP_S": ""})
    run = wait_end(h, run_id, 60)
    assert (run["state"], run["exit_code"]) == ("succeeded", 0), run
    assert run["executor_data"]["slurm_job_id"] == job_id
    assert slurm_jobs_tagged(slurm_cluster, tag(run_id)) == {job_id}
    assert ran.read_text().split() == [job_id]
    assert sbatch_count(h) == 1
    assert any(e.get("event") == "slurm_job_found_by_tag" for e in h.events())
