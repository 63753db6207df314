"""sacct's accounting of a run (with its steps) read into usage, and `orchestrator usage`'s
sums. The rows are as Slurm 22.05's sacct prints them (-n -P, USAGE_FORMAT)."""

from __future__ import annotations

import pytest

from orchestrator.cli_usage import summarise
from orchestrator.executors.slurm.parse import parse_sacct
from orchestrator.executors.slurm.render import NO_TASK
from orchestrator.executors.slurm.usage import cpu_seconds, of_run, parse_usage, rss_mb, total

# sacct -n -P --format=JobIDRaw,JobID,JobName,State,ExitCode,End,ElapsedRaw,TotalCPU,MaxRSS,
# AllocTRES,NodeList (the poll cycle's one call, steps included)
END = "2026-11-30T01:00:00"
PLAIN = f"""\
123|123|orch-r1|COMPLETED|0:0|{END}|65|01:02.500|0|billing=2,cpu=2,gres/gpu=1,mem=500M,node=1|nid001
123.batch|123.batch|batch|COMPLETED|0:0|{END}|65|01:02.400|51200K||nid001
123.extern|123.extern|extern|COMPLETED|0:0|{END}|65|00:00:00|1024K|cpu=2,node=1|nid001
"""
# an array of three tasks, task 2 moved to a fallback job 300 (cancelled in 200 before start)
ARRAY = f"""\
201|200_0|orch-r2|COMPLETED|0:0|{END}|10|00:09.500|0|billing=1,cpu=1,mem=100M,node=1|nid002
201.batch|200_0.batch|batch|COMPLETED|0:0|{END}|10|00:09.500|10240K|cpu=1,node=1|nid002
202|200_1|orch-r2|COMPLETED|0:0|{END}|20|00:19.000|0|billing=1,cpu=1,mem=100M,node=1|nid003
202.batch|200_1.batch|batch|COMPLETED|0:0|{END}|20|00:19.000|2G|cpu=1,node=1|nid003
203|200_2|orch-r2|CANCELLED by 0|0:0|{END}|0|00:00:00|||None assigned
200|200_[3-4%2]|orch-r2|PENDING|0:0|Unknown|0|00:00:00|||None assigned
301|300_2|orch-r2-fb|COMPLETED|0:0|{END}|3600|1-00:00:00|0|cpu=4,gres/gpu=2,node=1|nid[010-011]
301.batch|300_2.batch|batch|COMPLETED|0:0|{END}|3600|23:59:59|1.5G|cpu=4,node=1|nid[010-011]
"""


def test_sacct_fields_are_read_in_their_units() -> None:
    assert rss_mb("51200K") == 50.0
    assert rss_mb("2G") == 2048.0
    assert rss_mb("12.5M") == 12.5
    assert rss_mb("0") == 0.0
    assert rss_mb("") is None
    assert cpu_seconds("01:02.500") == 62.5
    assert cpu_seconds("02:00:01") == 7201.0
    assert cpu_seconds("1-00:00:00") == 86400.0
    assert cpu_seconds("junk") is None


def test_a_plain_job_has_its_steps_peak_and_its_allocation() -> None:
    per = of_run(parse_usage(PLAIN), ["123"])
    assert list(per) == [NO_TASK]
    assert [r.job_id for r in parse_sacct(PLAIN)] == ["123"]  # the steps are not jobs
    used = total(list(per.values()))
    assert used == {
        "wall_s": 65.0, "cpu_s": 62.5, "cpu_hours": round(65 * 2 / 3600, 4),
        "gpu_hours": round(65 / 3600, 4), "alloc_cpus": 2, "alloc_gpus": 1,
        "max_rss_mb": 50.0, "nodes": "nid001",
    }  # fmt: skip


def test_an_arrays_tasks_are_kept_apart_and_summed() -> None:
    per = of_run(parse_usage(ARRAY + PLAIN), ["200", "300"])  # another run's rows beside
    assert sorted(per) == ["0", "1", "2"]  # the pending placeholder is no task
    assert per["1"]["max_rss_mb"] == 2048.0
    assert per["2"]["cpu_s"] == 86400.0  # the fallback job's run of task 2
    assert per["2"]["gpu_hours"] == 2.0
    run = total(list(per.values()))
    assert run["tasks"] == 3
    assert run["wall_s"] == 3600.0  # the longest task
    assert run["cpu_s"] == 9.5 + 19.0 + 86400.0
    assert run["cpu_hours"] == pytest.approx((10 + 20) / 3600 + 4.0, abs=1e-3)
    assert run["gpu_hours"] == 2.0
    assert run["max_rss_mb"] == 2048.0
    assert run["nodes"] == "nid002 nid003 nid[010-011]"


def test_the_report_charges_slurm_allocations_and_local_cpu_time() -> None:
    rows = [
        ("photometry", "slurm", "t", {"wall_s": 3600, "cpu_s": 1800, "cpu_hours": 4.0,
                                      "gpu_hours": 1.0, "max_rss_mb": 3000}),
        ("photometry", "slurm", "t", {"wall_s": 1800, "cpu_s": 900, "cpu_hours": 2.0}),
        ("token", "local", "t", {"wall_s": 10, "cpu_s": 36, "max_rss_mb": 40}),
    ]  # fmt: skip
    lines = summarise(rows, "job")
    assert [line["job"] for line in lines] == ["photometry", "token", "total"]
    assert lines[0]["cpu_hours"] == 6.0
    assert lines[0]["cpu_used_hours"] == 0.75
    assert lines[0]["gpu_hours"] == 1.0
    assert lines[1]["cpu_hours"] == 0.01  # a local run: the CPU time it used
    assert lines[2]["runs"] == 3
    assert lines[2]["cpu_hours"] == 6.01
    assert lines[2]["max_rss_mb"] == 3000
    assert [line["executor"] for line in summarise(rows, "executor")] == [
        "slurm", "local", "total",
    ]  # fmt: skip
