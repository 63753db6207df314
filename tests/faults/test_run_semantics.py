"""Run semantics that surprised users (issue 8, points 2, 12 and 15), against a real daemon:
a suspended job does nothing in the background, pending retries are visible and can be
dropped, a drain interrupts rather than cancels, and the longest retry backoff never crashes."""

from __future__ import annotations

import time

from tests.conftest import DaemonHarness, wait_for
from tests.manifests import job


def _finished(daemon: DaemonHarness, job: str, count: int = 1) -> list[dict[str, object]]:
    runs = daemon.history(job)
    done = [r for r in runs if r["state"] not in ("pending", "running")]
    return runs if len(done) >= count else []


def test_manual_run_of_suspended_job_is_not_retried(daemon: DaemonHarness) -> None:
    """A suspended job with retries that a person triggers by hand and that fails is not
    retried in the background, neither now nor after a restart."""
    daemon.write(
        "flaky.yaml",
        job(
            "flaky",
            '["false"]',
            "suspend: true\npolicy: {retries: 3, retry_backoff: 1s}\n",
        ),
    )
    daemon.start()
    daemon.cli("trigger", "flaky")
    wait_for(lambda: _finished(daemon, "flaky"), 15)
    time.sleep(3)  # three backoffs of 1 s would have retried by now
    assert len(daemon.history("flaky")) == 1
    assert daemon.job_status("flaky")["pending_retries"] == []
    daemon.stop()
    daemon.start()
    time.sleep(3)
    assert len(daemon.history("flaky")) == 1


def test_success_of_suspended_job_triggers_no_after_jobs(daemon: DaemonHarness) -> None:
    """A suspended job's successful manual run does not start the jobs that name it in
    `after` (a suspended job does nothing in the background)."""
    daemon.write("first.yaml", job("first", '["true"]', "suspend: true\n"))
    daemon.write("second.yaml", job("second", '["true"]', "after: [first]\n"))
    daemon.start()
    daemon.cli("trigger", "first")
    wait_for(lambda: _finished(daemon, "first"), 15)
    assert daemon.history("first")[0]["state"] == "succeeded"
    time.sleep(2)
    assert daemon.history("second") == []


def test_pending_retry_is_shown_and_cancel_drops_it(daemon: DaemonHarness) -> None:
    """A pending retry appears in status (JSON and text) and plan, and `cancel <failed run>`
    drops it for good (also across a restart)."""
    daemon.write(
        "later.yaml",
        job("later", '["false"]', "policy: {retries: 2, retry_backoff: 1h}\n"),
    )
    daemon.start()
    run_id = daemon.cli("trigger", "later").stdout.strip()
    wait_for(lambda: _finished(daemon, "later"), 15)
    pending = wait_for(lambda: daemon.job_status("later")["pending_retries"], 10)
    assert [(p["retry_of"], p["attempt"]) for p in pending] == [(run_id, 2)]
    assert f"retry (attempt 2) of run {run_id}" in daemon.cli("status", check=False).stdout
    assert f"of run {run_id}" in daemon.cli("plan").stdout
    dropped = daemon.cli("cancel", run_id)
    assert "dropped the pending retry" in dropped.stdout
    assert daemon.job_status("later")["pending_retries"] == []
    daemon.stop()
    daemon.start()
    assert daemon.job_status("later")["pending_retries"] == []
    assert len(daemon.history("later")) == 1


def test_drain_records_interrupted_and_next_daemon_retries(daemon: DaemonHarness) -> None:
    """A run the drain (SIGTERM to the daemon) has to stop is recorded `interrupted`, not
    `cancelled`, and the next daemon runs it again when the policy has retries."""
    daemon.write(
        "long.yaml",
        job(
            "long",
            '["sleep", "60"]',
            "policy: {retries: 1, retry_backoff: 1s, kill_grace: 1s}\n",
        ),
    )
    daemon.extra_env["ORCH_DRAIN_GRACE_S"] = "1"
    daemon.start()
    run_id = daemon.cli("trigger", "long").stdout.strip()
    wait_for(lambda: daemon.history("long")[0]["state"] == "running", 10)
    daemon.stop()
    first = next(r for r in daemon.history("long") if r["run_id"] == run_id)
    assert first["state"] == "interrupted"
    daemon.start()
    retry = wait_for(
        lambda: next((r for r in daemon.history("long") if r["retry_of"] == run_id), None), 15
    )
    assert retry["trigger"] == "retry"
    assert retry["attempt"] == 2
    wait_for(lambda: daemon.history("long")[0]["state"] == "running", 10)
    daemon.cli("cancel", retry["run_id"])
    wait_for(lambda: daemon.history("long")[0]["state"] == "cancelled", 15)


def test_longest_retry_backoff_never_crashes_the_daemon(daemon: DaemonHarness) -> None:
    """A run that cannot start, with many retries and the longest backoff a manifest may
    give, leaves the daemon running with one retry pending a year ahead."""
    daemon.write(
        "never.yaml",
        job(
            "never",
            '["/nonexistent/command"]',
            "policy: {retries: 100, retry_backoff: {base: 365d, max: 365d}}\n",
        ),
    )
    daemon.start()
    daemon.cli("trigger", "never")
    wait_for(lambda: _finished(daemon, "never"), 15)
    pending = wait_for(lambda: daemon.job_status("never")["pending_retries"], 10)
    assert pending[0]["due"] > "2027"
    daemon.stop()
    daemon.start()  # the stored retry loads without overflow
    assert daemon.job_status("never")["pending_retries"][0]["due"] == pending[0]["due"]
    assert not [e for e in daemon.events() if e.get("event") == "event_failed"]
