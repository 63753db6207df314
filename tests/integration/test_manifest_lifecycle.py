"""The jobs directory as the daemon follows it: files dropped, edited (validly or not, half
written, by editors), removed, on network file systems (polling); a real `orchestrator run`
process, real files, real SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import DaemonHarness, wait_for
from tests.manifests import EVERY_2S, job, succeeded

pytestmark = pytest.mark.daemon


def test_drop_edit_delete_manifest(daemon: DaemonHarness) -> None:
    """A dropped every-2s manifest runs within 5 s; an atomic-rename edit reschedules it with
    the new content; deleting it stops it."""
    daemon.start()
    t0 = time.monotonic()
    daemon.write("ticker.yaml", EVERY_2S.format(word="first"))
    runs = wait_for(lambda: succeeded(daemon, "ticker"), 5)
    assert time.monotonic() - t0 < 5
    first_hash = runs[0]["manifest_hash"]
    log = daemon.cli("logs", runs[0]["run_id"]).stdout
    assert log.startswith("first ")
    assert runs[0]["run_id"] in log

    daemon.write("ticker.yaml", EVERY_2S.format(word="second"))
    second = wait_for(
        lambda: [r for r in succeeded(daemon, "ticker") if r["manifest_hash"] != first_hash], 6
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
    wait_for(lambda: succeeded(daemon, "ticker"), 5)
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
    before = len(succeeded(daemon, "ticker"))
    wait_for(lambda: len(succeeded(daemon, "ticker")) >= before + 1, 5)
    newest = succeeded(daemon, "ticker")[0]
    assert daemon.cli("logs", newest["run_id"]).stdout.startswith("good ")


def test_on_change_runs_once_per_content(daemon: DaemonHarness) -> None:
    """`on: change` runs once when the manifest appears and once per content change, and not
    again when the daemon restarts."""
    text = job("onchange", '["true"]', "description: {d}\nschedule: {{on: change}}")
    daemon.start()
    daemon.write("onchange.yaml", text.format(d="one"))
    wait_for(lambda: succeeded(daemon, "onchange"), 5)
    daemon.write("onchange.yaml", text.format(d="two"))
    wait_for(lambda: len(succeeded(daemon, "onchange")) == 2, 5)
    daemon.stop()
    daemon.start()
    time.sleep(1.5)
    assert len(daemon.history("onchange")) == 2
    assert {r["trigger"] for r in daemon.history("onchange")} == {"change"}


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
