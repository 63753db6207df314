"""More of the daemon's contract, each against a real daemon process."""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import datetime

import pytest

from tests.conftest import DaemonHarness, require, wait_for

pytestmark = pytest.mark.daemon

JOB = """\
apiVersion: orchestrator/v1
kind: Command
name: {name}
{extra}
spec:
  command: {command}
"""


def job(name: str, command: str, extra: str = "") -> str:
    return JOB.format(name=name, command=command, extra=extra)


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


def test_removing_manifest_with_on_remove_cancel(daemon: DaemonHarness) -> None:
    """A removed manifest's run in flight finishes by default, and is cancelled with
    `on_remove: cancel`."""
    daemon.write("keep.yaml", job("keep", '[sleep, "2"]'))
    daemon.write(
        "stop.yaml", job("stop", '[sleep, "30"]', "policy: {on_remove: cancel, kill_grace: 1s}")
    )
    daemon.start()
    daemon.cli("trigger", "keep")
    daemon.cli("trigger", "stop")
    (daemon.jobs_dir / "keep.yaml").unlink()
    (daemon.jobs_dir / "stop.yaml").unlink()
    wait_for(lambda: daemon.history("stop")[0]["state"] == "cancelled", 10)
    wait_for(lambda: daemon.history("keep")[0]["state"] == "succeeded", 10)


def test_half_written_and_editor_temp_files(daemon: DaemonHarness) -> None:
    """A manifest written in two parts ends up loaded in full, and editor swap, backup and
    probe files never become jobs."""
    daemon.start()
    path = daemon.jobs_dir / "slowly.yaml"
    text = job("slowly", '[bash, -c, "echo complete"]', "schedule: {on: change}")
    with open(path, "w") as fh:
        fh.write(text[:40])
        fh.flush()
        time.sleep(0.4)
        fh.write(text[40:])
    os.chmod(path, 0o644)
    run = wait_for(lambda: [r for r in daemon.history("slowly") if r["state"] == "succeeded"], 5)
    assert daemon.cli("logs", run[0]["run_id"]).stdout == "complete\n"
    for name in (".slowly.yaml.swp", "slowly.yaml~", "4913", "#slowly.yaml#", "x.tmp"):
        (daemon.jobs_dir / name).write_text(job("ghost", '["true"]'))
    time.sleep(1)
    names = {j["name"] for j in daemon.status()["jobs"]}
    assert names == {"slowly"}


def test_polling_observer_sees_changes(daemon: DaemonHarness) -> None:
    """With the polling observer (as on NFS/GPFS/Lustre) a new manifest is still picked up."""
    daemon.extra_env["ORCH_FORCE_POLLING"] = "1"
    daemon.start()
    assert daemon.status()["daemon"]["watch_mode"].startswith("polling")
    daemon.write("p.yaml", job("p", '["true"]', "schedule: {on: change}"))
    wait_for(lambda: [r for r in daemon.history("p") if r["state"] == "succeeded"], 6)


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


def test_edit_without_schedule_change_keeps_next_fire_time(daemon: DaemonHarness) -> None:
    """Editing a manifest without changing its schedule keeps its next fire time; changing
    the schedule moves it."""
    daemon.write("n.yaml", job("n", '["true"]', "description: one\nschedule: {every: 1h}"))
    daemon.start()
    first = daemon.job_status("n")
    before = first["next_run"]
    time.sleep(1.1)
    daemon.write("n.yaml", job("n", '["true"]', "description: two\nschedule: {every: 1h}"))
    wait_for(lambda: daemon.job_status("n")["manifest_hash"] != first["manifest_hash"], 3)
    time.sleep(0.5)
    assert daemon.job_status("n")["next_run"] == before
    daemon.write("n.yaml", job("n", '["true"]', "description: two\nschedule: {every: 2h}"))
    wait_for(lambda: daemon.job_status("n")["next_run"] != before, 3)


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
