"""`render JOB` shows what a run would get without running or writing anything; `describe
JOB` shows a job in full, its next fires in its own time zone and its last runs."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import DaemonHarness, wait_for
from tests.manifests import job

pytestmark = pytest.mark.daemon

SLURM_JOB = """\
apiVersion: orchestrator/v1
kind: Command
name: build
executor:
  slurm: {partition: cpu, time: 2h, cpus_per_task: 16, mem: 64G}
spec:
  command: [make, -j, "16"]
  env: {BUILD_FLAVOUR: release}
  container: {runtime: podman, image: "alma:9", mounts: ["/data:/data:ro"]}
"""


def test_render_shows_the_batch_script_and_writes_nothing(daemon: DaemonHarness) -> None:
    daemon.write("build.yaml", SLURM_JOB)
    shown = daemon.cli("render", "build").stdout
    assert "argv:     podman run " in shown
    assert "--volume /data:/data:ro" in shown or "-v /data:/data:ro" in shown
    assert "alma:9 make -j 16" in shown
    assert "  BUILD_FLAVOUR=release" in shown
    assert "--- Slurm batch script ---" in shown
    for line in ("#SBATCH --partition=cpu", "#SBATCH --time=0-02:00:00", "#SBATCH --mem=64G"):
        assert line in shown
    assert "#SBATCH --job-name=orch-RUN_ID" in shown
    data = json.loads(daemon.cli("render", "build", "--json").stdout)
    assert data["executor"] == "slurm"
    assert data["env"]["BUILD_FLAVOUR"] == "release"
    assert not daemon.state_dir.exists()  # nothing written: no run, no state
    missing = daemon.cli("render", "nosuch", check=False)
    assert missing.returncode == 1
    assert "no job named 'nosuch'" in missing.stderr
    assert "known jobs: build" in missing.stderr


def test_describe_shows_zone_local_fires_and_last_runs(daemon: DaemonHarness) -> None:
    daemon.write(
        "zurich.yaml",
        job("zurich", '[echo, "hello"]', "schedule: {cron: '0 3 * * *', timezone: Europe/Zurich}"),
    )
    daemon.start()
    run_id = daemon.cli("trigger", "zurich").stdout.strip()
    wait_for(lambda: daemon.history("zurich")[0]["finished_at"], 10)
    shown = daemon.cli("describe", "zurich").stdout
    assert "Schedule:    cron 0 3 * * * (Europe/Zurich)" in shown
    fires = re.findall(r"next:\s+(\S+ \S+) (\S+)", shown)
    assert len(fires) == 3
    assert all(
        t == "03:00:00" or t.endswith("03:00:00") for _, t in [(0, f[0].split()[1]) for f in fires]
    )
    assert {zone for _, zone in fires} <= {"CET", "CEST"}
    assert "Now:         idle" in shown
    assert re.search(rf"{run_id}  succeeded ", shown), shown


def test_diff_says_what_a_reload_would_change(daemon: DaemonHarness) -> None:
    """With changes the daemon has not read yet (a long debounce stands for edits on another
    node, which inotify does not see), `diff` lists them, field by field, and a reload
    applies them; secrets in notify URLs are not shown."""
    daemon.write("keep.yaml", job("keep", '["true"]'))
    daemon.write("edit.yaml", job("edit", '["true"]', "schedule: {every: 1h}"))
    daemon.write("gone.yaml", job("gone", '["true"]'))
    daemon.start(extra_env={"ORCH_DEBOUNCE_S": "60", "ORCH_RESCAN_INTERVAL_S": "3600"})
    assert daemon.cli("diff").returncode == 0
    daemon.write(
        "edit.yaml",
        job("edit", '["false"]', "schedule: {every: 2h}\nnotify: {urls: ['json://h/Secret77']}"),
    )
    daemon.write("new.yaml", job("new", '["true"]'))
    (daemon.jobs_dir / "gone.yaml").unlink()
    daemon.write("keep.yaml", "# a comment only\n" + job("keep", '["true"]'))
    shown = daemon.cli("diff", check=False)
    assert shown.returncode == 1
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("+ new  (new: ")
    assert lines[1].startswith("- gone  (removed: ")
    assert lines[2].startswith("~ edit  (")
    assert '    schedule.every: "1h" -> "2h"' in lines
    assert '    spec.command: ["true"] -> ["false"]' in lines
    assert "    notify: (URLs not shown) -> changed" in lines
    assert not any("keep" in line for line in lines)  # a comment changes nothing
    assert "Secret77" not in shown.stdout
    daemon.cli("reload")
    assert daemon.cli("diff").returncode == 0
