"""The daemon process itself: crashes and restarts (kill -9, a run's process gone with it),
one daemon per state directory, SIGTERM drain, systemd's notify protocol, what it logs, and the
command line while it is down; a real `orchestrator run` process, real files, real SQLite."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import DaemonHarness, wait_for
from tests.manifests import EVERY_2S, job, succeeded

pytestmark = pytest.mark.daemon


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
    wait_for(lambda: succeeded(daemon, "quick"), 5)
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
        job("victim", '[bash, -c, "sleep 30"]', "policy: {retries: 1, retry_backoff: 1s}"),
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


def test_sigterm_drains_and_cancels_after_grace(daemon: DaemonHarness) -> None:
    """SIGTERM lets running runs finish up to the grace period, then cancels and records the
    rest; the daemon exits 0."""
    daemon.extra_env["ORCH_DRAIN_GRACE_S"] = "1"
    daemon.write(
        "long.yaml",
        job("long", '[sleep, "60"]', "policy: {kill_grace: 1s}"),
    )
    daemon.write(
        "short.yaml",
        job("short", '[sleep, "0.5"]'),
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


def test_plan_status_history_offline(daemon: DaemonHarness) -> None:
    """`plan` lists next fire times in the job's time zone rules, and `status`/`history`
    answer from the files and the store when no daemon runs."""
    daemon.write(
        "tz.yaml",
        job("tz", '["true"]', 'schedule: {cron: "0 3 * * *", timezone: Europe/Zurich}'),
    )
    daemon.write("bad.yaml", job("bad", '"not a list"'))
    plan = json.loads(daemon.cli("plan", "--json", check=False).stdout)
    tz = next(p for p in plan if p["name"] == "tz")
    assert len(tz["next_runs"]) == 3
    hours = {datetime.fromisoformat(t).hour for t in tz["next_runs"]}
    assert hours <= {1, 2}  # 03:00 in Zurich is 01:00 or 02:00 UTC
    assert any(not p["valid"] and "bad.yaml:6:" in p["error"] for p in plan)

    daemon.start()
    run_id = daemon.cli("trigger", "tz").stdout.strip()
    wait_for(lambda: daemon.history("tz")[0]["state"] == "succeeded", 5)
    daemon.stop()
    status = daemon.status()
    assert status["daemon"]["running"] is False
    row = next(j for j in status["jobs"] if j["name"] == "tz")
    assert row["last_run"]["run_id"] == run_id
    assert row["last_run"]["exit_code"] == 0
    assert row["next_run"] is not None
    (entry,) = daemon.history("tz")
    for key in (
        "run_id",
        "job",
        "trigger",
        "attempt",
        "state",
        "exit_code",
        "started_at",
        "finished_at",
        "log_path",
    ):
        assert key in entry
    assert entry["trigger"] == "manual"
    assert entry["attempt"] == 1


def test_run_events_carry_job_and_run_id(daemon: DaemonHarness) -> None:
    """Every run event in the JSON log carries the job name and the run id."""
    daemon.write("e.yaml", job("e", '["true"]'))
    daemon.start()
    run_id = daemon.cli("trigger", "e").stdout.strip()
    wait_for(lambda: daemon.history("e")[0]["state"] == "succeeded", 5)
    run_events = [e for e in daemon.events() if e["event"].startswith("run_")]
    assert {"run_started", "run_finished"} <= {e["event"] for e in run_events}
    assert all(e["job"] == "e" and e["run_id"] == run_id for e in run_events)
