"""Follow-ups across crashes and drains, and a run that cannot be
rendered never stopping the daemon. A real `orchestrator run` process, real files, SQLite."""

from __future__ import annotations

import time

import pytest

from tests.conftest import DaemonHarness, wait_for
from tests.manifests import job

pytestmark = pytest.mark.daemon


def test_after_trigger_of_an_unrenderable_job_fails_that_run_only(daemon: DaemonHarness) -> None:
    """A job started by `after` whose command cannot be rendered (an apptainer bind path with
    ',', which --bind reads as a separator) is recorded failed with the reason, and the daemon
    keeps running and scheduling."""
    daemon.write("first.yaml", job("first", '["true"]'))
    daemon.write(
        "second.yaml",
        """\
        apiVersion: orchestrator/v1
        kind: Command
        name: second
        after: [first]
        spec:
          command: ["true"]
          container:
            runtime: apptainer
            image: docker://alpine:3.20
            mounts: [{source: "/tmp/a,b", target: /data}]
        """,
    )
    daemon.start()
    daemon.cli("trigger", "first")
    run = wait_for(lambda: (h := daemon.history("second")) and h[0]["finished_at"] and h[0], 5)
    assert run["state"] == "failed"
    assert "could not start" in run["message"]
    assert "','" in run["message"]
    time.sleep(1.5)
    assert daemon.proc is not None
    assert daemon.proc.poll() is None, daemon.log_path.read_text()
    assert daemon.cli("trigger", "first").stdout.strip()


def test_after_trigger_for_a_run_that_succeeded_while_the_daemon_was_down(
    daemon: DaemonHarness,
) -> None:
    """A run that succeeded while no daemon ran (kill -9, then restart) still triggers the
    jobs that name it in `after`, once."""
    daemon.write("first.yaml", job("first", '[sleep, "1.5"]'))
    daemon.write("second.yaml", job("second", '["true"]', "after: [first]"))
    daemon.start()
    run_id = daemon.cli("trigger", "first").stdout.strip()
    wait_for(lambda: daemon.history("first")[0]["pid"], 5)
    daemon.kill9()
    time.sleep(2.5)  # the run ends while no daemon runs
    daemon.start()
    first = daemon.history("first")[0]
    assert first["run_id"] == run_id
    assert first["state"] == "succeeded"
    second = wait_for(lambda: daemon.history("second"), 5)
    assert len(second) == 1
    assert second[0]["trigger"] == "after"


def test_run_failing_during_drain_is_retried_after_restart(daemon: DaemonHarness) -> None:
    """A run that fails while the daemon drains (SIGTERM) keeps its retry: the restarted
    daemon runs it."""
    daemon.write(
        "flaky.yaml",
        job(
            "flaky",
            '[bash, -c, "sleep 1; exit 5"]',
            "policy: {retries: 1, retry_backoff: {base: 1s, max: 1s}}",
        ),
    )
    daemon.start()
    run_id = daemon.cli("trigger", "flaky").stdout.strip()
    wait_for(lambda: daemon.history("flaky")[0]["pid"], 5)
    assert daemon.stop() == 0  # drain grace 5 s: the run fails during the drain
    daemon.start()
    first = next(r for r in daemon.history("flaky") if r["run_id"] == run_id)
    assert first["state"] == "failed"
    assert first["exit_code"] == 5
    retry = wait_for(
        lambda: next((r for r in daemon.history("flaky") if r["trigger"] == "retry"), None), 6
    )
    assert retry["attempt"] == 2
    assert retry["retry_of"] == run_id


def test_two_pending_retries_of_one_job_both_survive_a_restart(daemon: DaemonHarness) -> None:
    """Two failed runs of one job (concurrency: allow) each keep their pending retry across
    a restart."""
    daemon.write(
        "flaky.yaml",
        job(
            "flaky",
            '[bash, -c, "exit 5"]',
            "policy: {concurrency: allow, retries: 1, retry_backoff: {base: 4s, max: 4s}}",
        ),
    )
    daemon.start()
    a = daemon.cli("trigger", "flaky").stdout.strip()
    b = daemon.cli("trigger", "flaky").stdout.strip()
    wait_for(lambda: all(r["finished_at"] for r in daemon.history("flaky")), 5)
    assert daemon.stop() == 0
    daemon.start()
    retries = wait_for(
        lambda: (
            (rs := [r for r in daemon.history("flaky") if r["trigger"] == "retry"])
            and len(rs) == 2
            and rs
        ),
        10,
    )
    assert {r["retry_of"] for r in retries} == {a, b}


def test_after_trigger_of_a_run_succeeding_during_drain_runs_after_restart(
    daemon: DaemonHarness,
) -> None:
    """A run that succeeds while the daemon drains (SIGTERM) starts nothing then, but the
    restarted daemon starts the jobs that name it in `after`, once."""
    daemon.write("first.yaml", job("first", '[bash, -c, "sleep 1"]'))
    daemon.write("second.yaml", job("second", '["true"]', "after: [first]"))
    daemon.start()
    daemon.cli("trigger", "first")
    wait_for(lambda: daemon.history("first")[0]["pid"], 5)
    assert daemon.stop() == 0  # drain grace 5 s: `first` succeeds during the drain
    assert daemon.history("first")[0]["state"] == "succeeded"
    assert daemon.history("second") == []
    daemon.start()
    run = wait_for(lambda: [r for r in daemon.history("second") if r["finished_at"]], 5)
    assert run[0]["trigger"] == "after"
    assert run[0]["state"] == "succeeded"
    daemon.stop()
    daemon.start()
    time.sleep(1)
    assert len(daemon.history("second")) == 1  # not replayed by a further restart
