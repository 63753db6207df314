"""The Slurm executor end to end: a real daemon process submitting to the real test cluster.

The helpers here (``slurm_daemon``, ``manifest``, ``wait_end`` ...) are shared with
test_failures.py and test_arrays.py.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DaemonHarness, wait_for
from tests.slurm.conftest import SlurmCluster

BIN = Path(__file__).resolve().parent / "bin"  # call-logging wrappers of sbatch/squeue/...
TERMINAL = {"succeeded", "failed", "cancelled", "timed_out", "lost", "skipped", "missed"}


def daemon_env(cluster: SlurmCluster, root: Path, **extra: str) -> dict[str, str]:
    """The daemon's environment: the cluster, fast polling, and the wrappers first on PATH."""
    env = {
        "SLURM_CONF": str(cluster.conf),
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "ORCH_TEST_SLURM_CALLS": str(root / "slurm-calls.txt"),
        "ORCH_SLURM_POLL_MIN_S": "0.5",
        "ORCH_SLURM_POLL_MAX_S": "2",
        "ORCH_SLURM_LOST_GRACE_S": "120",
    }
    env.update(extra)
    return env


@pytest.fixture
def slurm_daemon(slurm_cluster: SlurmCluster, tmp_path: Path) -> Iterator[DaemonHarness]:
    """A daemon harness wired to the test cluster (not started); its Slurm jobs are cancelled
    at the end so that they never hold the next test's CPUs."""
    harness = DaemonHarness(tmp_path, env=daemon_env(slurm_cluster, tmp_path))
    yield harness
    if harness.proc is not None and harness.proc.poll() is None:
        harness.stop()
    cancel_leftovers(slurm_cluster, harness)


def cancel_leftovers(cluster: SlurmCluster, harness: DaemonHarness) -> None:
    if not harness.state_dir.exists():
        return
    try:
        runs = harness.history()
    except AssertionError:
        return
    for run in runs:
        names = f"{tag(run['run_id'])},{tag(run['run_id'])}-fallback"
        cluster.run("scancel", f"--name={names}")


def manifest(
    name: str,
    script: str,
    slurm: dict[str, Any] | None = None,
    policy: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """A Command manifest run by bash on Slurm, as JSON (which YAML reads as it is)."""
    doc: dict[str, Any] = {
        "apiVersion": "orchestrator/v1",
        "kind": "Command",
        "name": name,
        "executor": {"slurm": slurm or {}},
        "spec": {"command": ["bash", "-c", script], **({"env": env} if env else {})},
    }
    if policy:
        doc["policy"] = policy
    return json.dumps(doc, indent=2) + "\n"


def tag(run_id: str) -> str:
    return f"orch-{run_id}"


def trigger(h: DaemonHarness, job: str) -> str:
    return h.cli("trigger", job).stdout.strip()


def get_run(h: DaemonHarness, run_id: str) -> dict[str, Any]:
    return next(r for r in h.history() if r["run_id"] == run_id)


def wait_end(h: DaemonHarness, run_id: str, timeout_s: float) -> dict[str, Any]:
    """The run's record once it is in a terminal state."""
    return dict(
        wait_for(
            lambda: (r := get_run(h, run_id))["state"] in TERMINAL and r,
            timeout_s,
            interval_s=0.3,
        )
    )


def wait_state(h: DaemonHarness, run_id: str, state: str, timeout_s: float) -> dict[str, Any]:
    return dict(wait_for(lambda: (r := get_run(h, run_id))["state"] == state and r, timeout_s, 0.2))


def slurm_jobs_tagged(cluster: SlurmCluster, name: str) -> set[str]:
    """Job ids (array job ids for arrays) Slurm knows under the job name ``name``: squeue's
    (finished jobs stay for MinJobAge) and, with accounting, sacct's."""
    out = cluster.run("squeue", "-h", "--states=all", f"--name={name}", "-o", "%F")
    assert out.returncode == 0, out.stderr
    ids = set(out.stdout.split())
    if cluster.accounting:
        acct = cluster.run(
            "sacct", "-X", "-n", "-P", "-S", "now-1days", f"--name={name}", "--format=JobID"
        )
        assert acct.returncode == 0, acct.stderr
        ids |= {line.split("_")[0] for line in acct.stdout.split()}
    return ids


def slurm_calls(h: DaemonHarness) -> list[tuple[float, str, str]]:
    """(time, command, arguments) of every Slurm client call the daemon made."""
    path = Path(h.extra_env["ORCH_TEST_SLURM_CALLS"])
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        stamp, command, *rest = line.split(" ", 2)
        out.append((float(stamp), command, rest[0] if rest else ""))
    return out


# ------------------------------------------------------------------------------------- tests


def test_exit_codes_land_in_history_and_script_is_kept(
    slurm_daemon: DaemonHarness, slurm_cluster: SlurmCluster
) -> None:
    """A Slurm run that exits 0 is recorded succeeded, one that exits 3 failed with exit code
    3, each through exactly one sbatch, with its rendered batch script kept in its directory."""
    h = slurm_daemon
    h.write("ok.yaml", manifest("ok", "echo hello-from-slurm"))
    h.write("bad.yaml", manifest("bad", "echo about-to-fail; exit 3"))
    h.start()
    ok_id, bad_id = trigger(h, "ok"), trigger(h, "bad")
    ok, bad = wait_end(h, ok_id, 60), wait_end(h, bad_id, 60)
    assert (ok["state"], ok["exit_code"]) == ("succeeded", 0), ok
    assert (bad["state"], bad["exit_code"]) == ("failed", 3), bad
    for run, word in ((ok, "hello-from-slurm"), (bad, "about-to-fail")):
        data = run["executor_data"]
        script = Path(data["script"])
        assert script.parent == Path(run["run_dir"])
        assert script.name == "job.sbatch"
        assert f"#SBATCH --job-name={tag(run['run_id'])}" in script.read_text()
        assert slurm_jobs_tagged(slurm_cluster, tag(run["run_id"])) == {data["slurm_job_id"]}
        assert word in h.cli("logs", run["run_id"]).stdout
    assert len([c for c in slurm_calls(h) if c[1] == "sbatch"]) == 2


@pytest.mark.slow
def test_time_limit_is_recorded_as_timed_out(
    slurm_daemon: DaemonHarness, slurm_cluster: SlurmCluster
) -> None:
    """A job with `time: 1m` whose command sleeps longer is killed by Slurm and recorded as
    timed_out (Slurm enforces limits in whole minutes, so this takes a minute and more).

    It runs in CI's main stage only: the state comes from the same table whether sacct or
    squeue reports it (tests/unit cover both parsers), and the 60-90 s wait would count twice
    against the suite's 20 minutes."""
    if not slurm_cluster.accounting:
        pytest.skip("runs on the cluster with accounting (make test); see the docstring")
    h = slurm_daemon
    h.write("late.yaml", manifest("late", "sleep 600", slurm={"time": "1m"}))
    h.start()
    run_id = trigger(h, "late")
    wait_state(h, run_id, "running", 30)
    run = wait_end(h, run_id, 150)
    assert run["state"] == "timed_out", run
    assert "TIMEOUT" in (run["message"] or ""), run


def test_invalid_partition_fails_at_once(slurm_daemon: DaemonHarness) -> None:
    """sbatch's refusal of an unknown partition fails the run at once, with Slurm's message,
    and is not retried as if it were an outage."""
    h = slurm_daemon
    h.write("nopart.yaml", manifest("nopart", "true", slurm={"partition": "nope"}))
    h.start()
    t0 = time.monotonic()
    run = wait_end(h, trigger(h, "nopart"), 20)
    assert time.monotonic() - t0 < 15
    assert run["state"] == "failed", run
    assert "invalid partition" in run["message"].lower(), run
    assert len([c for c in slurm_calls(h) if c[1] == "sbatch"]) == 1
    assert h.status()["daemon"]["executors"]["slurm"]["breaker"] == "closed"


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [("account", "nope", "invalid account"), ("qos", "nope", "invalid qos")],
)
def test_invalid_account_or_qos_fails_at_once(
    slurm_daemon: DaemonHarness,
    slurm_cluster: SlurmCluster,
    option: str,
    value: str,
    words: str,
) -> None:
    """With accounting, sbatch's refusal of an unknown account or QOS fails the run at once
    with Slurm's message."""
    if not slurm_cluster.accounting:
        pytest.skip(
            "this cluster runs without accounting (ORCH_SLURM_ACCOUNTING=0), where Slurm "
            "validates neither accounts nor QOS"
        )
    h = slurm_daemon
    h.write("wrong.yaml", manifest("wrong", "true", slurm={option: value}))
    h.start()
    run = wait_end(h, trigger(h, "wrong"), 20)
    assert run["state"] == "failed", run
    assert words in run["message"].lower(), run
    assert len([c for c in slurm_calls(h) if c[1] == "sbatch"]) == 1


def test_cancel_calls_scancel_and_records_cancelled(
    slurm_daemon: DaemonHarness, slurm_cluster: SlurmCluster
) -> None:
    """`orchestrator cancel RUN_ID` of a running Slurm run calls scancel on its job, the job
    ends CANCELLED in Slurm and the run is recorded cancelled."""
    h = slurm_daemon
    h.write("long.yaml", manifest("long", "sleep 300"))
    h.start()
    run_id = trigger(h, "long")
    job_id = wait_for(lambda: get_run(h, run_id)["executor_data"].get("slurm_job_id"), 30, 0.2)
    wait_state(h, run_id, "running", 30)
    h.cli("cancel", run_id)
    run = wait_end(h, run_id, 30)
    assert run["state"] == "cancelled", run
    assert any(c[1] == "scancel" and job_id in c[2].split() for c in slurm_calls(h))
    state = slurm_cluster.run("squeue", "-h", "--states=all", "-j", job_id, "-o", "%T")
    assert state.stdout.strip() == "CANCELLED"


def test_restart_readopts_running_job(
    slurm_daemon: DaemonHarness, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """A daemon stopped by SIGTERM leaves its Slurm job running; the next daemon re-adopts the
    run without submitting again and records the job's real end (exit code 5)."""
    h = slurm_daemon
    release = tmp_path / "release"
    h.write(
        "held.yaml",
        manifest("held", f"while [ ! -e {release} ]; do sleep 0.2; done; exit 5"),
    )
    h.start()
    run_id = trigger(h, "held")
    wait_state(h, run_id, "running", 30)
    job_id = get_run(h, run_id)["executor_data"]["slurm_job_id"]
    assert h.stop(signal.SIGTERM) == 0
    state = slurm_cluster.run("squeue", "-h", "-j", job_id, "-o", "%T")
    assert state.stdout.strip() == "RUNNING"
    h.start()
    assert get_run(h, run_id)["state"] == "running"
    release.touch()
    run = wait_end(h, run_id, 30)
    assert (run["state"], run["exit_code"]) == ("failed", 5), run
    assert slurm_jobs_tagged(slurm_cluster, tag(run_id)) == {job_id}
    assert len([c for c in slurm_calls(h) if c[1] == "sbatch"]) == 1
    assert any(e.get("event") == "slurm_run_adopted" for e in h.events())


def test_status_polls_make_at_most_two_calls_per_cycle(
    slurm_daemon: DaemonHarness, slurm_cluster: SlurmCluster
) -> None:
    """With 12 Slurm runs active at once, each status cycle makes one squeue call and at most
    one sacct call (for all jobs together, their usage included), never one call per job."""
    h = slurm_daemon
    count = 12
    for i in range(count):
        h.write(f"many{i}.yaml", manifest(f"many{i}", "sleep 3"))
    h.start()
    run_ids = [trigger(h, f"many{i}") for i in range(count)]
    runs = [wait_end(h, run_id, 120) for run_id in run_ids]
    assert all(r["state"] == "succeeded" for r in runs), runs
    calls = slurm_calls(h)
    assert len([c for c in calls if c[1] == "sbatch"]) == count
    status = [c for c in calls if c[1] in ("squeue", "sacct")]
    squeues = [i for i, c in enumerate(status) if c[1] == "squeue"]
    assert len(squeues) >= 3
    # Calls per cycle: a squeue, then at most one sacct before the next squeue.
    for start, end in zip(squeues, [*squeues[1:], len(status)], strict=True):
        between = [c for c in status[start + 1 : end] if c[1] == "sacct"]
        assert len(between) <= 1, status[start:end]
    assert status[0][1] == "squeue"
    if slurm_cluster.accounting:
        # One sacct asks for many jobs at once.
        assert max(len(c[2].split("-j ", 1)[1].split(",")) for c in status if c[1] == "sacct") > 1


def test_cancel_after_ambiguous_submission_submits_nothing(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """A run cancelled while its ambiguous submission ("Socket timed out", the job may exist)
    awaits a retry is looked up by its tag first; found nowhere, it ends cancelled before
    submission, and no Slurm job with its tag ever exists."""
    h = DaemonHarness(
        tmp_path, env=daemon_env(slurm_cluster, tmp_path, ORCH_TEST_SBATCH_TIMEOUT="1")
    )
    try:
        h.write("stuck.yaml", manifest("stuck", "true"))
        h.start()
        run_id = trigger(h, "stuck")
        wait_for(lambda: any(c[1] == "sbatch" for c in slurm_calls(h)), 15, 0.1)
        h.cli("cancel", run_id)
        run = wait_end(h, run_id, 30)
        assert run["state"] == "cancelled", run
        assert "before submission" in run["message"], run
        assert run["executor_data"].get("slurm_job_id") is None
        assert slurm_jobs_tagged(slurm_cluster, tag(run_id)) == set()
    finally:
        if h.proc is not None and h.proc.poll() is None:
            h.stop()
