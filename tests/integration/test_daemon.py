"""The daemon end to end: a real `orchestrator run` process, real files, real SQLite."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import DaemonHarness, wait_for

pytestmark = pytest.mark.daemon

EVERY_2S = """\
apiVersion: orchestrator/v1
kind: Command
name: ticker
schedule: {{every: 2s}}
spec:
  command: [bash, -c, "echo {word} $ORCH_RUN_ID"]
"""


def _succeeded(h: DaemonHarness, job: str) -> list[dict]:
    return [r for r in h.history(job) if r["state"] == "succeeded"]


def test_drop_edit_delete_manifest(daemon: DaemonHarness) -> None:
    """A dropped every-2s manifest runs within 5 s; an atomic-rename edit reschedules it with
    the new content; deleting it stops it."""
    daemon.start()
    t0 = time.monotonic()
    daemon.write("ticker.yaml", EVERY_2S.format(word="first"))
    runs = wait_for(lambda: _succeeded(daemon, "ticker"), 5)
    assert time.monotonic() - t0 < 5
    first_hash = runs[0]["manifest_hash"]
    log = daemon.cli("logs", runs[0]["run_id"]).stdout
    assert log.startswith("first ")
    assert runs[0]["run_id"] in log

    daemon.write("ticker.yaml", EVERY_2S.format(word="second"))
    second = wait_for(
        lambda: [r for r in _succeeded(daemon, "ticker") if r["manifest_hash"] != first_hash], 6
    )
    assert daemon.cli("logs", second[0]["run_id"]).stdout.startswith("second ")

    (daemon.jobs_dir / "ticker.yaml").unlink()
    wait_for(lambda: not any(j["name"] == "ticker" for j in daemon.status()["jobs"]), 3)
    time.sleep(0.5)  # a run that was already starting may still finish
    count = len(daemon.history("ticker"))
    time.sleep(4.5)
    assert len(daemon.history("ticker")) == count


def test_invalid_edit_keeps_last_good_version(daemon: DaemonHarness) -> None:
    """An invalid edit keeps the old version running and shows the error, with its line, in
    `status --json`; a new invalid file is reported and skipped without stopping others."""
    daemon.start()
    daemon.write("ticker.yaml", EVERY_2S.format(word="good"))
    wait_for(lambda: _succeeded(daemon, "ticker"), 5)
    daemon.write(
        "ticker.yaml",
        EVERY_2S.format(word="bad").replace("spec:", "policy: {timeout: soon}\nspec:"),
    )
    daemon.write("broken.yaml", "apiVersion: orchestrator/v1\nkind: Command\nname: [x\n")
    row = wait_for(lambda: (r := daemon.job_status("ticker")) and not r["valid"] and r, 3)
    assert "ticker.yaml:5:" in row["error"]
    assert "policy.timeout" in row["error"]
    assert row["in_effect"]
    assert row["next_run"]
    broken = [j for j in daemon.status()["jobs"] if j["path"].endswith("broken.yaml")]
    assert broken
    assert not broken[0]["valid"]
    assert "broken.yaml:4:1:" in broken[0]["error"]
    assert "starts at line 3" in broken[0]["error"]
    before = len(_succeeded(daemon, "ticker"))
    wait_for(lambda: len(_succeeded(daemon, "ticker")) >= before + 1, 5)
    newest = _succeeded(daemon, "ticker")[0]
    assert daemon.cli("logs", newest["run_id"]).stdout.startswith("good ")


def test_kill9_during_run_then_restart_records_once(daemon: DaemonHarness) -> None:
    """kill -9 of the daemon while a run is in flight, then a restart: the run is recorded
    exactly once with its real exit code, nothing runs twice, no history is lost."""
    daemon.write(
        "slow.yaml",
        """\
        apiVersion: orchestrator/v1
        kind: Command
        name: slow
        spec:
          command: [bash, -c, "echo started >> $MARK; sleep 3; exit 3"]
          env: {MARK: "%s"}
        """
        % (daemon.root / "marks"),
    )
    daemon.start()
    daemon.write("quick.yaml", EVERY_2S.format(word="q").replace("ticker", "quick"))
    wait_for(lambda: _succeeded(daemon, "quick"), 5)
    run_id = daemon.cli("trigger", "slow").stdout.strip()
    wait_for(lambda: (daemon.root / "marks").exists(), 5)
    history_before = {r["run_id"] for r in daemon.history()}
    daemon.kill9()
    time.sleep(0.5)
    daemon.start()
    run = wait_for(
        lambda: next(
            (
                r
                for r in daemon.history("slow")
                if r["run_id"] == run_id and r["state"] != "running"
            ),
            None,
        ),
        10,
    )
    assert run["state"] == "failed"
    assert run["exit_code"] == 3
    assert len(daemon.history("slow")) == 1
    assert (daemon.root / "marks").read_text().count("started") == 1
    assert history_before <= {r["run_id"] for r in daemon.history()}


def test_run_lost_when_process_died_with_daemon(daemon: DaemonHarness) -> None:
    """A run whose process died while the daemon was down is marked lost, and retried per
    its policy."""
    daemon.write(
        "victim.yaml",
        """\
        apiVersion: orchestrator/v1
        kind: Command
        name: victim
        policy: {retries: 1, retry_backoff: 1s}
        spec:
          command: [bash, -c, "sleep 30"]
        """,
    )
    daemon.start()
    run_id = daemon.cli("trigger", "victim").stdout.strip()
    run = wait_for(lambda: next((r for r in daemon.history("victim") if r["pid"]), None), 5)
    daemon.kill9()
    os.killpg(run["pid"], signal.SIGKILL)  # the shim and the job: gone without a result
    time.sleep(0.3)
    daemon.start()
    lost = wait_for(
        lambda: next(
            (r for r in daemon.history("victim") if r["run_id"] == run_id and r["state"] == "lost"),
            None,
        ),
        5,
    )
    assert "left no result" in lost["message"] or "gone" in lost["message"]
    retry = wait_for(
        lambda: next((r for r in daemon.history("victim") if r["trigger"] == "retry"), None), 5
    )
    assert retry["attempt"] == 2
    assert retry["retry_of"] == run_id
    daemon.cli("cancel", retry["run_id"])
    wait_for(lambda: daemon.history("victim")[0]["state"] == "cancelled", 15)


def _set_through(state_dir: Path, job: str, when: datetime) -> None:
    db = sqlite3.connect(state_dir / "runs.sqlite")
    with db:
        cur = db.execute(
            "UPDATE job_state SET value = ? WHERE job = ? AND key = 'scheduled_through'",
            (json.dumps(when.isoformat()), job),
        )
        assert cur.rowcount == 1
    db.close()


@pytest.mark.parametrize(("catchup", "expect_run"), [("10m", True), ("30s", False)])
def test_catchup_window(daemon: DaemonHarness, catchup: str, expect_run: bool) -> None:
    """A cron time missed while the daemon was down runs once on start when it lies inside
    `catchup`, and is recorded as missed when it lies outside."""
    due = (datetime.now(UTC) - timedelta(minutes=3)).replace(second=0, microsecond=0)
    daemon.write(
        "nightly.yaml",
        f"""\
        apiVersion: orchestrator/v1
        kind: Command
        name: nightly
        schedule: {{cron: "{due.minute} {due.hour} * * *", catchup: {catchup}}}
        spec: {{command: ["true"]}}
        """,
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


def test_forbid_never_overlaps_and_timeout_kills_children(daemon: DaemonHarness) -> None:
    """`concurrency: forbid` never overlaps two runs; a run over its timeout is killed with
    the children it started and recorded timed_out."""
    daemon.write(
        "busy.yaml",
        """\
        apiVersion: orchestrator/v1
        kind: Command
        name: busy
        schedule: {every: 1s}
        policy: {concurrency: forbid}
        spec: {command: [bash, -c, "sleep 2.2"]}
        """,
    )
    pidfile = daemon.root / "grandchild.pid"
    daemon.write(
        "hang.yaml",
        f"""\
        apiVersion: orchestrator/v1
        kind: Command
        name: hang
        policy: {{timeout: 2s, kill_grace: 1s}}
        spec: {{command: [bash, -c, "sleep 300 & echo $! > {pidfile}; wait"]}}
        """,
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


def test_trigger_after_and_retries(daemon: DaemonHarness) -> None:
    """`trigger` prints a run id and starts the job within a second; a successful run
    triggers the jobs that name it in `after`; a failing job is retried with backoff."""
    daemon.write(
        "first.yaml",
        """\
        apiVersion: orchestrator/v1
        kind: Command
        name: first
        spec: {command: ["true"]}
        """,
    )
    daemon.write(
        "second.yaml",
        """\
        apiVersion: orchestrator/v1
        kind: Command
        name: second
        after: [first]
        policy: {retries: 2, retry_backoff: {base: 1s, max: 1s}}
        spec: {command: [bash, -c, "exit 4"]}
        """,
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


def test_on_change_runs_once_per_content(daemon: DaemonHarness) -> None:
    """`on: change` runs once when the manifest appears and once per content change, and not
    again when the daemon restarts."""
    text = """\
    apiVersion: orchestrator/v1
    kind: Command
    name: onchange
    description: {d}
    schedule: {{on: change}}
    spec: {{command: ["true"]}}
    """
    daemon.start()
    daemon.write("onchange.yaml", text.format(d="one"))
    wait_for(lambda: _succeeded(daemon, "onchange"), 5)
    daemon.write("onchange.yaml", text.format(d="two"))
    wait_for(lambda: len(_succeeded(daemon, "onchange")) == 2, 5)
    daemon.stop()
    daemon.start()
    time.sleep(1.5)
    assert len(daemon.history("onchange")) == 2
    assert {r["trigger"] for r in daemon.history("onchange")} == {"change"}


def test_second_daemon_refused_with_holder(daemon: DaemonHarness) -> None:
    """A second daemon on the same state directory refuses to start, naming the holder's
    host and pid."""
    daemon.start()
    second = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run"],
        env=daemon.env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode != 0
    assert str(daemon.proc.pid) in second.stderr
    assert socket.gethostname() in second.stderr


def test_world_writable_jobs_dir_refused(daemon: DaemonHarness) -> None:
    """The daemon refuses a jobs directory that other users can write."""
    os.chmod(daemon.jobs_dir, 0o777)
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run"],
        env=daemon.env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "writable by other users" in result.stderr


def test_sigterm_drains_and_cancels_after_grace(daemon: DaemonHarness) -> None:
    """SIGTERM lets running runs finish up to the grace period, then cancels and records the
    rest; the daemon exits 0."""
    daemon.extra_env["ORCH_DRAIN_GRACE_S"] = "1"
    daemon.write(
        "long.yaml",
        """\
        apiVersion: orchestrator/v1
        kind: Command
        name: long
        policy: {kill_grace: 1s}
        spec: {command: [sleep, "60"]}
        """,
    )
    daemon.write(
        "short.yaml",
        """\
        apiVersion: orchestrator/v1
        kind: Command
        name: short
        spec: {command: [sleep, "0.5"]}
        """,
    )
    daemon.start()
    daemon.cli("trigger", "long")
    daemon.cli("trigger", "short")
    assert daemon.stop() == 0
    assert daemon.history("short")[0]["state"] == "succeeded"
    long_run = daemon.history("long")[0]
    # The daemon stopped it, not a person: 'interrupted' (issue 8), retried per policy.
    assert long_run["state"] == "interrupted"


def test_sd_notify_protocol(daemon: DaemonHarness, tmp_path: Path) -> None:
    """Under systemd the daemon sends READY=1 after the first reconcile, STATUS lines,
    WATCHDOG=1 when WatchdogSec is set, RELOADING=1 with MONOTONIC_USEC on SIGHUP, and
    STOPPING=1 on SIGTERM."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    daemon.write("ticker.yaml", EVERY_2S.format(word="x"))
    daemon.start(wait=False, extra_env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000"})
    messages: list[str] = []

    def drain() -> list[str]:
        try:
            while True:
                messages.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
        return messages

    wait_for(lambda: any("READY=1" in m for m in drain()), 20)
    wait_for(lambda: sum("WATCHDOG=1" in m for m in drain()) >= 2, 5)
    assert any(m.startswith("STATUS=1 jobs") for m in messages)
    daemon.proc.send_signal(signal.SIGHUP)
    reload_msg = wait_for(lambda: next((m for m in drain() if "RELOADING=1" in m), None), 5)
    assert "MONOTONIC_USEC=" in reload_msg
    daemon.stop()
    assert any("STOPPING=1" in m for m in drain())
    sock.close()
