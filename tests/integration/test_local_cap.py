"""ORCH_MAX_LOCAL_RUNS: at most that many local runs at once (login-node etiquette); a run
beyond it waits, is shown waiting in `status`, starts when a slot frees, and survives a
restart of the daemon while it waits."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.conftest import DaemonHarness, wait_for
from tests.manifests import job

pytestmark = pytest.mark.daemon


def _spans(daemon: DaemonHarness) -> list[tuple[datetime, datetime]]:
    return [
        (datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"]))
        for r in daemon.history()
        if r["finished_at"] and r["started_at"]
    ]


def test_runs_beyond_the_cap_wait_for_a_slot(daemon: DaemonHarness) -> None:
    for name in ("a", "b", "c"):
        daemon.write(f"{name}.yaml", job(name, '[sleep, "1.5"]'))
    daemon.start(extra_env={"ORCH_MAX_LOCAL_RUNS": "2"})
    assert daemon.cli("trigger", "a").returncode == 0
    assert daemon.cli("trigger", "b").returncode == 0
    third = daemon.cli("trigger", "c")
    assert third.returncode == 0, third.stderr
    assert "waits for a free local slot (2 runs at most at once)" in third.stdout + third.stderr
    shown = daemon.cli("status", check=False).stdout
    assert "1 run(s) waiting for a free slot" in shown
    assert "waiting for a free local slot since" in shown
    again = daemon.cli("trigger", "c", check=False)
    assert "already waits for a free local slot" in again.stdout + again.stderr
    wait_for(lambda: len(_spans(daemon)) == 3, 20)
    spans = sorted(_spans(daemon))
    # c started only once a or b had ended: never three at once
    assert spans[2][0] >= min(spans[0][1], spans[1][1]), spans
    assert daemon.job_status("c")["waiting_for_slot"] is None
    assert len(daemon.history("c")) == 1  # the second trigger was refused, not queued


def test_a_waiting_run_survives_a_restart(daemon: DaemonHarness) -> None:
    daemon.write("long.yaml", job("long", '[sleep, "2"]'))
    daemon.write("next.yaml", job("next", '["true"]'))
    daemon.start(extra_env={"ORCH_MAX_LOCAL_RUNS": "1"})
    daemon.cli("trigger", "long")
    daemon.cli("trigger", "next")
    wait_for(lambda: daemon.job_status("next")["waiting_for_slot"], 5)
    daemon.kill9()
    daemon.start(extra_env={"ORCH_MAX_LOCAL_RUNS": "1"})
    run = wait_for(
        lambda: next((r for r in daemon.history("next") if r["state"] == "succeeded"), None), 20
    )
    assert run["trigger"] == "manual"
    assert len(daemon.history("next")) == 1
