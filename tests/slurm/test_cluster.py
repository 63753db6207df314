"""The test cluster behaves as the project's Slurm notes say (job ids, exit codes, errors)."""

from __future__ import annotations

import uuid

from tests.conftest import wait_for
from tests.slurm.conftest import SlurmCluster

CONNECT_FAILURE = "Unable to contact slurm controller (connect failure)"


def submit(cluster: SlurmCluster, *args: str) -> str:
    result = cluster.run("sbatch", "--parsable", "--output=/dev/null", *args)
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    assert job_id.isdigit(), result.stdout
    return job_id


def test_failed_job_exit_code_is_recorded(slurm_cluster: SlurmCluster) -> None:
    """`sbatch --parsable` prints the job id; a job that exits 3 ends FAILED with 3:0 (sacct
    with accounting; without it sacct says storage is disabled and scontrol still knows)."""
    job_id = submit(slurm_cluster, "--wrap", "exit 3")
    sacct = ("sacct", "-X", "--parsable2", "--noheader", "--format=JobIDRaw,State,ExitCode")
    if slurm_cluster.accounting:
        # sacct lags behind the job's end: poll with a deadline.
        row = wait_for(
            lambda: f"{job_id}|FAILED|3:0" in slurm_cluster.run(*sacct, "-j", job_id).stdout,
            timeout_s=30,
            interval_s=0.3,
        )
        assert row
    else:
        result = slurm_cluster.run(*sacct, "-j", job_id)
        assert result.returncode == 1
        assert "Slurm accounting storage is disabled" in result.stdout + result.stderr

        def finished() -> str:
            out = slurm_cluster.run("scontrol", "show", "job", job_id).stdout
            return out if "JobState=FAILED" in out else ""

        assert "ExitCode=3:0" in wait_for(finished, timeout_s=30, interval_s=0.3)


def test_invalid_partition_and_qos_are_rejected(slurm_cluster: SlurmCluster) -> None:
    """An unknown partition is refused at submission, the second partition `batch` is accepted;
    with accounting an unknown QOS is refused and QOS `tests` is accepted."""
    bad = slurm_cluster.run("sbatch", "--partition=nope", "--output=/dev/null", "--wrap", "true")
    assert bad.returncode == 1
    assert "Invalid partition name specified" in bad.stderr
    submit(slurm_cluster, "--partition=batch", "--wrap", "true")
    if slurm_cluster.accounting:
        bad = slurm_cluster.run("sbatch", "--qos=nope", "--output=/dev/null", "--wrap", "true")
        assert bad.returncode == 1
        assert "Invalid qos specification" in bad.stderr
        submit(slurm_cluster, "--qos=tests", "--wrap", "true")


def test_controller_restart_recovers_running_job(slurm_cluster: SlurmCluster) -> None:
    """With slurmctld stopped squeue fails with the connect-failure message; once it is started
    again the job that ran meanwhile is still known and running."""
    name = f"restart-{uuid.uuid4().hex[:8]}"
    job_id = submit(slurm_cluster, f"--job-name={name}", "--wrap", "sleep 120")

    def state() -> str:
        return slurm_cluster.run("squeue", "-h", "-j", job_id, "-o", "%T").stdout.strip()

    wait_for(lambda: state() == "RUNNING", timeout_s=30, interval_s=0.2)
    slurm_cluster.stop_ctld()
    try:
        down = slurm_cluster.run("squeue", "-h", "-j", job_id)  # about MessageTimeout-1 s
        assert down.returncode == 1
        assert CONNECT_FAILURE in down.stderr
    finally:
        slurm_cluster.start_ctld()
    try:
        wait_for(lambda: state() == "RUNNING", timeout_s=30, interval_s=0.2)
        jobs = slurm_cluster.run("squeue", "-h", "--name", name, "-o", "%A").stdout.split()
        assert jobs == [job_id]
    finally:
        slurm_cluster.run("scancel", job_id)


def test_several_jobs_run_at_once(slurm_cluster: SlurmCluster) -> None:
    """The node offers more CPUs than the 2 real cores, so several 1-CPU jobs run concurrently."""
    n_jobs = 4
    name = f"concurrent-{uuid.uuid4().hex[:8]}"
    ids = [submit(slurm_cluster, f"--job-name={name}", "--wrap", "sleep 60") for _ in range(n_jobs)]
    try:

        def running() -> bool:
            out = slurm_cluster.run("squeue", "-h", "--name", name, "-t", "RUNNING", "-o", "%A")
            return len(out.stdout.split()) == n_jobs

        wait_for(running, timeout_s=30, interval_s=0.2)
    finally:
        slurm_cluster.run("scancel", *ids)
