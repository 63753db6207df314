"""`status` and `check` exit with the deployment's health (0 OK, 1 WARNING, 2 CRITICAL) and say
why in one line, against a real daemon."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DaemonHarness, wait_for
from tests.manifests import job

pytestmark = pytest.mark.daemon


def test_status_and_check_say_ok_degraded_and_down(daemon: DaemonHarness) -> None:
    daemon.write("fine.yaml", job("fine", '["true"]'))
    daemon.start()
    ok = daemon.cli("check", check=False)
    assert (ok.returncode, ok.stdout.startswith("ORCHESTRATOR OK - 1 job(s) valid")) == (0, True)
    daemon.write("broken.yaml", job("broken", '["false"]'))
    wait_for(lambda: "broken" in {j["name"] for j in daemon.status()["jobs"]}, 10)
    daemon.cli("trigger", "broken")
    wait_for(lambda: daemon.history("broken") and daemon.history("broken")[0]["finished_at"], 10)
    bad = daemon.cli("check", check=False)
    assert bad.returncode == 1, bad.stdout
    assert bad.stdout.strip().startswith("ORCHESTRATOR WARNING - broken: last run failed (")
    shown = daemon.cli("status", check=False)
    assert shown.returncode == 1
    assert shown.stdout.splitlines()[-1] == bad.stdout.strip()
    data = json.loads(daemon.cli("status", "--json", check=False).stdout)
    assert data["health"]["state"] == "degraded"
    # mended, and run again: well again
    before = daemon.job_status("broken")["manifest_hash"]
    daemon.write("broken.yaml", job("broken", '["true"]'))
    wait_for(lambda: daemon.job_status("broken")["manifest_hash"] != before, 10)
    daemon.cli("trigger", "broken")
    wait_for(lambda: daemon.cli("check", check=False).returncode == 0, 20)
    daemon.stop()
    down = daemon.cli("check", check=False)
    assert down.returncode == 2
    assert down.stdout.startswith("ORCHESTRATOR CRITICAL - the daemon is not running")


def test_a_job_without_its_expected_success_is_overdue_until_it_succeeds(
    daemon: DaemonHarness,
) -> None:
    """expect.success_within: 4s on an hourly job that has not run yet: after 4 s `check` says
    it is overdue (a dead-man's switch); a successful run clears it."""
    daemon.write(
        "watch.yaml",
        job("watch", '["true"]', "schedule: {every: 1h}\nexpect: {success_within: 4s}"),
    )
    daemon.start()
    late = wait_for(
        lambda: (r := daemon.cli("check", check=False)).returncode == 1 and r.stdout, 15
    )
    assert "watch: overdue: no success in" in late, late
    assert "(expected within 4s)" in late
    daemon.cli("trigger", "watch")
    wait_for(
        lambda: daemon.history("watch") and daemon.history("watch")[0]["state"] == "succeeded", 10
    )
    fine = daemon.cli("check", check=False)
    assert fine.returncode == 0, fine.stdout
