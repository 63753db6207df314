"""`suspend JOB` / `resume JOB`: a runtime pause without editing the manifest, kept over a
restart, shown in `status`; a job the manifest suspends cannot be resumed from the command
line."""

from __future__ import annotations

import time

import pytest

from tests.conftest import DaemonHarness, wait_for
from tests.manifests import job

pytestmark = pytest.mark.daemon


def _count(daemon: DaemonHarness, name: str) -> int:
    return len(daemon.history(name))


def test_suspend_stops_the_schedule_until_resume_even_over_a_restart(
    daemon: DaemonHarness,
) -> None:
    daemon.write("tick.yaml", job("tick", '["true"]', "schedule: {every: 1s}"))
    daemon.write("off.yaml", job("off", '["true"]', "schedule: {every: 1h}\nsuspend: true"))
    daemon.start()
    wait_for(lambda: _count(daemon, "tick") >= 1, 10)
    assert daemon.cli("suspend", "tick").stdout.strip() == "tick: suspended"
    assert daemon.cli("suspend", "tick").stdout.strip() == "tick: already suspended"
    shown = daemon.cli("status", check=False).stdout
    assert "suspended since" in shown
    assert "orchestrator resume tick" in shown
    time.sleep(0.5)  # a run that had started goes on
    before = _count(daemon, "tick")
    time.sleep(1.8)
    assert _count(daemon, "tick") == before
    daemon.stop()
    daemon.start()
    time.sleep(1.8)
    assert _count(daemon, "tick") == before  # still suspended after the restart
    assert daemon.job_status("tick")["suspended_at_runtime"]["since"]
    daemon.cli("trigger", "tick")  # by hand it runs
    wait_for(lambda: _count(daemon, "tick") == before + 1, 10)
    assert daemon.cli("resume", "tick").stdout.strip() == "tick: resumed"
    wait_for(lambda: _count(daemon, "tick") >= before + 3, 10)
    assert daemon.job_status("tick")["suspended_at_runtime"] is None
    refused = daemon.cli("resume", "off", check=False)
    assert refused.returncode == 1
    assert "suspended by its manifest" in refused.stderr
    assert "off.yaml" in refused.stderr
    unknown = daemon.cli("suspend", "nosuch", check=False)
    assert (unknown.returncode, "no job named 'nosuch'" in unknown.stderr) == (1, True)
