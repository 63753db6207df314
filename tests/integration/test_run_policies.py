"""What a job's policy and relations make of its runs: concurrency (forbid, replace),
timeouts, retries, `after`, `requires:`, catch-up, history retention, containers; each against
a real daemon process."""

from __future__ import annotations

import itertools
import json
import shutil
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import DaemonHarness, require, wait_for
from tests.manifests import job

pytestmark = pytest.mark.daemon


def _set_through(state_dir: Path, name: str, when: datetime) -> None:
    db = sqlite3.connect(state_dir / "runs.sqlite")
    with db:
        cur = db.execute(
            "UPDATE job_state SET value = ? WHERE job = ? AND key = 'scheduled_through'",
            (json.dumps(when.isoformat()), name),
        )
        assert cur.rowcount == 1
    db.close()


# A stand-in token job: writes the result an AliEnToken run leaves (its `valid_until`).
TOKEN_JOB = """\
apiVersion: orchestrator/v1
kind: Command
name: tok
spec:
  command:
    - bash
    - -c
    - >-
      printf '{{"valid_until": "%s"}}'
      "$(date -u -d '+{hours} hour' +%Y-%m-%dT%H:%M:%S+00:00)" > "$ORCH_TASK_RESULT"
"""


def test_forbid_never_overlaps_and_timeout_kills_children(daemon: DaemonHarness) -> None:
    """`concurrency: forbid` never overlaps two runs; a run over its timeout is killed with
    the children it started and recorded timed_out."""
    daemon.write(
        "busy.yaml",
        job(
            "busy",
            '[bash, -c, "sleep 2.2"]',
            "schedule: {every: 1s}\npolicy: {concurrency: forbid}",
        ),
    )
    pidfile = daemon.root / "grandchild.pid"
    daemon.write(
        "hang.yaml",
        job(
            "hang",
            f'[bash, -c, "sleep 300 & echo $! > {pidfile}; wait"]',
            "policy: {timeout: 2s, kill_grace: 1s}",
        ),
    )
    daemon.start()
    daemon.cli("trigger", "hang")
    wait_for(lambda: len([r for r in daemon.history("busy") if r["finished_at"]]) >= 2, 10)
    runs = sorted(
        (r for r in daemon.history("busy") if r["started_at"]), key=lambda r: r["started_at"]
    )
    for a, b in itertools.pairwise(runs):
        assert a["finished_at"] is not None
        assert a["finished_at"] <= b["started_at"]
    hung = wait_for(lambda: next((r for r in daemon.history("hang") if r["finished_at"]), None), 8)
    assert hung["state"] == "timed_out"
    grandchild = int(pidfile.read_text())
    wait_for(lambda: not Path(f"/proc/{grandchild}").exists(), 3)


def test_replace_policy_cancels_the_running_run(daemon: DaemonHarness) -> None:
    """`concurrency: replace` cancels the active run when a new one starts."""
    daemon.write(
        "r.yaml", job("r", '[sleep, "30"]', "policy: {concurrency: replace, kill_grace: 1s}")
    )
    daemon.start()
    first = daemon.cli("trigger", "r").stdout.strip()
    wait_for(lambda: daemon.history("r")[0]["state"] == "running", 5)
    second = daemon.cli("trigger", "r").stdout.strip()
    runs = wait_for(
        lambda: (
            (h := {r["run_id"]: r for r in daemon.history("r")})
            and h[first]["state"] == "cancelled"
            and h
        ),
        10,
    )
    assert runs[second]["state"] == "running"
    daemon.cli("cancel", second)
    wait_for(lambda: {r["state"] for r in daemon.history("r")} == {"cancelled"}, 10)


def test_forbid_refuses_a_manual_trigger_while_running(daemon: DaemonHarness) -> None:
    """Under `concurrency: forbid` a manual trigger while a run is active is refused with a
    message naming the active run."""
    daemon.write("f.yaml", job("f", '[sleep, "30"]', "policy: {kill_grace: 1s}"))
    daemon.start()
    first = daemon.cli("trigger", "f").stdout.strip()
    result = daemon.cli("trigger", "f", check=False)
    assert result.returncode == 1
    assert first in result.stderr
    assert "forbid" in result.stderr
    daemon.cli("cancel", first)


def test_trigger_after_and_retries(daemon: DaemonHarness) -> None:
    """`trigger` prints a run id and starts the job within a second; a successful run
    triggers the jobs that name it in `after`; a failing job is retried with backoff."""
    daemon.write("first.yaml", job("first", '["true"]'))
    daemon.write(
        "second.yaml",
        job(
            "second",
            '[bash, -c, "exit 4"]',
            "after: [first]\npolicy: {retries: 2, retry_backoff: {base: 1s, max: 1s}}",
        ),
    )
    daemon.start()
    t0 = time.monotonic()
    run_id = daemon.cli("trigger", "first").stdout.strip()
    assert run_id
    started = wait_for(lambda: [r for r in daemon.history("first") if r["started_at"]], 2)
    assert started[0]["run_id"] == run_id
    assert started[0]["trigger"] == "manual"
    assert time.monotonic() - t0 < 2
    runs = wait_for(
        lambda: (
            (h := daemon.history("second"))
            and len(h) >= 3
            and all(r["finished_at"] for r in h)
            and h
        ),
        10,
    )
    by_attempt = sorted(runs, key=lambda r: r["attempt"])
    assert [r["trigger"] for r in by_attempt] == ["after", "retry", "retry"]
    assert all(r["state"] == "failed" and r["exit_code"] == 4 for r in runs)
    time.sleep(2)
    assert len(daemon.history("second")) == 3  # retries stop at policy.retries


@pytest.mark.parametrize(("catchup", "expect_run"), [("10m", True), ("30s", False)])
def test_catchup_window(daemon: DaemonHarness, catchup: str, expect_run: bool) -> None:
    """A cron time missed while the daemon was down runs once on start when it lies inside
    `catchup`, and is recorded as missed when it lies outside."""
    due = (datetime.now(UTC) - timedelta(minutes=3)).replace(second=0, microsecond=0)
    daemon.write(
        "nightly.yaml",
        job(
            "nightly",
            '["true"]',
            f'schedule: {{cron: "{due.minute} {due.hour} * * *", catchup: {catchup}}}',
        ),
    )
    daemon.start()
    daemon.stop()
    # The daemon "was down" from 5 minutes ago: the due time 3 minutes ago was missed.
    _set_through(daemon.state_dir, "nightly", due - timedelta(minutes=2))
    daemon.start()
    if expect_run:
        run = wait_for(
            lambda: [r for r in daemon.history("nightly") if r["state"] == "succeeded"], 5
        )
        assert len(run) == 1
        assert run[0]["trigger"] == "catchup"
        assert run[0]["scheduled_for"].startswith(due.isoformat()[:16])
    else:
        missed = wait_for(lambda: daemon.history("nightly"), 5)
        assert [r["state"] for r in missed] == ["missed"]
        time.sleep(1)
        assert len(daemon.history("nightly")) == 1
    daemon.stop()
    daemon.start()  # a second restart neither replays nor re-records the same miss
    time.sleep(1)
    assert len(daemon.history("nightly")) == 1


def test_history_retention_prunes_old_runs_and_logs(daemon: DaemonHarness) -> None:
    """`policy.history` keeps that many finished runs per job and removes older runs'
    records and log directories."""
    daemon.write("h.yaml", job("h", '["true"]', "policy: {history: 2}"))
    daemon.start()
    ids = []
    for _ in range(4):
        ids.append(daemon.cli("trigger", "h").stdout.strip())
        wait_for(lambda: daemon.history("h")[0]["state"] == "succeeded", 5)
    kept = daemon.history("h")
    assert [r["run_id"] for r in kept] == ids[:1:-1]
    assert not (daemon.state_dir / "runs" / ids[0]).exists()
    assert (daemon.state_dir / "runs" / ids[3]).exists()


def test_requires_defers_until_token_renewed(daemon: DaemonHarness) -> None:
    """A run whose required token would expire too soon waits, the token job is triggered,
    and the run starts once the token lasts long enough; the token result is in history."""
    daemon.write("tok.yaml", TOKEN_JOB.format(hours=3))
    daemon.write("work.yaml", job("work", '["true"]', "requires: [tok]\npolicy: {timeout: 1h}"))
    daemon.start()
    result = daemon.cli("trigger", "work")
    assert result.stdout == ""
    assert "waits for required job 'tok'" in result.stderr
    token_run = wait_for(lambda: [r for r in daemon.history("tok") if r["state"] == "succeeded"], 5)
    assert token_run[0]["result"]["valid_until"] > token_run[0]["finished_at"]
    work = wait_for(lambda: [r for r in daemon.history("work") if r["state"] == "succeeded"], 5)
    assert work[0]["trigger"] == "manual"
    daemon.cli("trigger", "work")  # the token now lasts: runs at once, no new token run
    wait_for(lambda: len([r for r in daemon.history("work") if r["finished_at"]]) == 2, 5)
    assert len(daemon.history("tok")) == 1


def test_requires_blocks_when_token_stays_short(daemon: DaemonHarness) -> None:
    """When the token job runs but the token still would not outlast the run, the run is
    blocked (logged), not started, and the token job is not triggered in a loop."""
    daemon.write("tok.yaml", TOKEN_JOB.format(hours=1))
    daemon.write("work.yaml", job("work", '["true"]', "requires: [tok]\npolicy: {timeout: 2h}"))
    daemon.start()
    daemon.cli("trigger", "work")
    wait_for(lambda: any(e["event"] == "run_blocked_by_required_job" for e in daemon.events()), 5)
    time.sleep(1)
    assert daemon.history("work") == []
    assert len(daemon.history("tok")) == 1


def test_podman_container_job(daemon: DaemonHarness) -> None:
    """A Command job with a podman container runs through the daemon with its env and a
    read-only mount, and its output lands in the run's log."""
    require(
        shutil.which("podman") is not None and shutil.which("runc") is not None,
        "podman and runc (Debian packages podman, runc)",
    )
    from tests.unit.test_containers import _busybox_image

    image = _busybox_image(daemon.root)
    data = daemon.root / "data"
    data.mkdir()
    (data / "in.txt").write_text("payload\n")
    daemon.write(
        "boxed.yaml",
        f"""\
        apiVersion: orchestrator/v1
        kind: Command
        name: boxed
        spec:
          command: [sh, -c, 'echo "$MSG"; cat /data/in.txt']
          workdir: /data
          container:
            runtime: podman
            image: {image}
            mounts: ["{data}:/data:ro"]
            env: {{MSG: "inside the box"}}
            extra_args: [--runtime, runc, --network=none,
                         --ulimit, "nofile=1024:1024", --ulimit, "nproc=1024:1024"]
        """,
    )
    daemon.start()
    run_id = daemon.cli("trigger", "boxed").stdout.strip()
    run = wait_for(lambda: next((r for r in daemon.history("boxed") if r["finished_at"]), None), 60)
    log = daemon.cli("logs", run_id).stdout
    assert run["state"] == "succeeded", log
    assert "inside the box\npayload\n" in log
