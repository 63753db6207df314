"""What a local run used (issue 12, "resource use per run"): wall time, CPU time and the peak
memory of the largest process of its tree, in the run's record (``history --json``:
``result.usage``)."""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import DaemonHarness, wait_for
from tests.manifests import job

pytestmark = pytest.mark.daemon

# a grandchild (bash runs python in the background and waits): 160 MB touched, ~0.3 s of CPU
TREE = (
    f'["bash", "-c", "{sys.executable} -c \\"b = bytes(b\'x\') * (160 * 2**20); '
    f's = sum(range(6_000_000))\\" & wait"]'
)


def test_a_runs_process_tree_is_measured(daemon: DaemonHarness) -> None:
    daemon.write("tree.yaml", job("tree", TREE))
    daemon.start()
    run_id = daemon.cli("trigger", "tree").stdout.strip()
    run = wait_for(lambda: next((r for r in daemon.history("tree") if r["finished_at"]), None), 30)
    assert run["run_id"] == run_id
    assert run["state"] == "succeeded", daemon.cli("logs", run_id).stdout
    usage = run["result"]["usage"]
    assert usage["max_rss_mb"] >= 160, usage  # the grandchild's, reaped by the run's shim
    assert usage["cpu_s"] >= 0.1, usage
    assert usage["wall_s"] >= 0.1, usage
    # the allocation report: a local run's CPU time is its CPU-hours
    report = json.loads(daemon.cli("usage", "--since", "1h", "-o", "json").stdout)
    line = next(g for g in report["lines"] if g["job"] == "tree")
    assert line["runs"] == 1
    assert line["cpu_hours"] == round(usage["cpu_s"] / 3600, 4)
    table = daemon.cli("usage").stdout.splitlines()
    assert table[1].split() == ["JOB", "RUNS", "WALL-H", "CPU-H", "USED-CPU-H", "GPU-H", "PEAK-RSS"]
    assert table[2].split()[:2] == ["tree", "1"]
    shown = daemon.cli("history", "tree").stdout
    assert "[used: " in shown
    assert " MiB" in shown
