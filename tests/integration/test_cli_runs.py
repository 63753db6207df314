"""The run commands as a user types them against a real daemon: `trigger --wait` exits with
the run's code as a shell shows it, `logs JOB --tail N` and `logs -f`, `history`'s filters and
its answer for a job that does not exist, `reload`'s line."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.conftest import DaemonHarness
from tests.manifests import job

pytestmark = pytest.mark.daemon

COUNT = '[sh, -c, "for i in 1 2 3 4 5; do echo line-$i; sleep 0.2; done; exit 3"]'


def test_trigger_wait_logs_and_history_filters(daemon: DaemonHarness) -> None:
    daemon.write("count.yaml", job("count", COUNT))
    daemon.write("term.yaml", job("term", '[sh, -c, "kill -TERM $$"]'))
    daemon.start()
    done = daemon.cli("trigger", "count", "--wait", check=False)
    assert done.returncode == 3, done.stderr
    run_id = done.stdout.splitlines()[0]
    assert done.stdout.splitlines()[1] == f"{run_id} failed (exit code 3)"
    killed = daemon.cli("trigger", "term", "--wait", check=False)
    assert killed.returncode == 143
    assert "(exit code 143, SIGTERM)" in killed.stdout

    assert daemon.cli("logs", "count", "--tail", "2").stdout == "line-4\nline-5\n"
    assert daemon.cli("logs", run_id).stdout.count("line-") == 5

    # -f: started with the run, it prints the lines as they come and returns at its end
    second = daemon.cli("trigger", "count").stdout.strip()
    started = time.monotonic()
    followed = subprocess.run(
        [sys.executable, "-m", "orchestrator", "logs", "-f", second],
        env=daemon.env(), capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert followed.stdout.count("line-") == 5, followed.stdout
    assert time.monotonic() - started >= 0.5  # it waited for the output, not a snapshot

    failed = daemon.cli("history", "count", "--state", "failed", "--json").stdout
    assert failed.count('"run_id"') == 2
    none = daemon.cli("history", "count", "--state", "succeeded")
    assert (none.stdout, "no runs of count match" in none.stderr) == ("", True)
    time.sleep(1.1)
    assert daemon.cli("history", "--since", "1s").stdout == ""
    unknown = daemon.cli("history", "nosuchjob", check=False)
    assert unknown.returncode == 1
    assert "no job named 'nosuchjob'" in unknown.stderr
    assert daemon.cli("reload").stdout.startswith(f"reloaded {daemon.jobs_dir}")


def test_a_placeholder_in_a_job_that_runs_is_warned_about(daemon: DaemonHarness) -> None:
    """The daemon logs what `validate` warns about for a job that runs, and `status` shows
    it under the job; a suspended example is not logged."""
    daemon.write("live.yaml", job("live", "[fetch, --key, CHANGE-ME]"))
    daemon.write("example.yaml", job("example", "[fetch, --key, CHANGE-ME]", "suspend: true"))
    daemon.start()
    warned = [e for e in daemon.events() if e["event"] == "manifest_warning"]
    assert [e["job"] for e in warned] == ["live"]
    assert warned[0]["field"] == "spec.command.2"
    row = daemon.job_status("live")
    assert row["warnings"] == [
        "live.yaml:6:27: spec.command.2: placeholder 'CHANGE-ME' left in: replace it before "
        "enabling the job"
    ]
    assert (
        "    warning: live.yaml:6:27: spec.command.2: placeholder"
        in daemon.cli("status", check=False).stdout
    )
