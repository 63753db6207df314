"""The metrics of one status answer, read back with prometheus_client's own parser."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.clock import utcnow
from orchestrator.metrics import registry


def _samples(
    status: dict[str, Any], runs: dict[tuple[str, str], int], **more: Any
) -> dict[tuple, float]:
    text = generate_latest(registry(status, runs, **more)).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_jobs_runs_tokens_and_executors_become_metrics() -> None:
    now = utcnow()
    token_run = {
        "run_id": "t1",
        "state": "succeeded",
        "started_at": (now - timedelta(seconds=30)).isoformat(),
        "finished_at": (now - timedelta(seconds=10)).isoformat(),
        "result": {"valid_until": (now + timedelta(hours=2)).isoformat()},
    }
    failed_run = {**token_run, "run_id": "n1", "state": "failed", "result": {}}
    status = {
        "daemon": {
            "running": True,
            "executors": {"slurm": {"breaker": "open", "tracked_runs": 3}},
        },
        "jobs": [
            {"name": "tok", "kind": "AliEnToken", "valid": True, "last_run": token_run},
            {
                "name": "nightly",
                "kind": "Command",
                "valid": True,
                "last_run": failed_run,
                "active_runs": ["x"],
                "overdue": "overdue: ...",
            },
            {"name": "bad", "path": "/j/bad.yaml", "kind": None, "valid": False, "last_run": None},
        ],
    }
    got = _samples(status, {("nightly", "failed"): 4, ("tok", "succeeded"): 9})
    assert got[("orchestrator_up", ())] == 1
    assert got[("orchestrator_health", ())] == 1  # degraded: a failed run, overdue, invalid
    assert got[("orchestrator_manifest_errors", ())] == 1
    assert got[("orchestrator_job_valid", (("job", "bad"),))] == 0
    assert got[("orchestrator_job_last_run_succeeded", (("job", "tok"),))] == 1
    assert got[("orchestrator_job_last_run_succeeded", (("job", "nightly"),))] == 0
    assert abs(got[("orchestrator_job_last_run_duration_seconds", (("job", "tok"),))] - 20) < 1e-6
    assert got[("orchestrator_job_overdue", (("job", "nightly"),))] == 1
    assert got[("orchestrator_job_active_runs", (("job", "nightly"),))] == 1
    assert 7190 < got[("orchestrator_token_seconds_left", (("job", "tok"),))] <= 7200
    assert ("orchestrator_token_seconds_left", (("job", "nightly"),)) not in got
    assert got[("orchestrator_runs", (("job", "nightly"), ("state", "failed")))] == 4
    assert got[("orchestrator_executor_breaker_open", (("executor", "slurm"),))] == 1
    assert got[("orchestrator_executor_tracked_runs", (("executor", "slurm"),))] == 3


def test_usage_pointer_age_calls_slots_and_durations_become_metrics() -> None:
    now = utcnow()
    o2_run = {
        "run_id": "o1",
        "state": "succeeded",
        "started_at": (now - timedelta(seconds=90)).isoformat(),
        "finished_at": (now - timedelta(seconds=60)).isoformat(),
        "result": {
            "pointer_since": (now - timedelta(days=8)).isoformat(),
            "usage": {"cpu_s": 12.5, "max_rss_mb": 300.0, "gpu_hours": 0.25},
        },
    }
    status = {
        "daemon": {
            "running": True,
            "waiting_for_slot": 2,
            "executors": {
                "slurm": {
                    "breaker": "closed",
                    "tracked_runs": 1,
                    "calls": {"sbatch": 3, "squeue": 40},
                    "errors": {"squeue": 2},
                }
            },
        },
        "jobs": [{"name": "o2", "kind": "O2Sync", "valid": True, "last_run": o2_run}],
    }
    got = _samples(
        status,
        {("o2", "succeeded"): 3},
        durations=[("o2", "succeeded", 30.0), ("o2", "succeeded", 4000.0)],
        last_success={"o2": 1_800_000_000.0},
    )
    job = (("job", "o2"),)
    assert 8 * 86400 <= got[("orchestrator_o2_pointer_age_seconds", job)] < 8 * 86400 + 5
    assert got[("orchestrator_job_last_run_cpu_seconds", job)] == 12.5
    assert got[("orchestrator_job_last_run_max_rss_bytes", job)] == 300 * 2**20
    assert got[("orchestrator_job_last_run_gpu_hours", job)] == 0.25
    assert got[("orchestrator_job_last_success_timestamp_seconds", job)] == 1_800_000_000.0
    assert got[("orchestrator_runs_waiting_for_slot", ())] == 2
    calls = (("command", "squeue"), ("executor", "slurm"))
    assert got[("orchestrator_executor_calls", calls)] == 40
    assert got[("orchestrator_executor_call_errors", calls)] == 2
    assert got[("orchestrator_run_duration_seconds_count", job)] == 2
    assert got[("orchestrator_run_duration_seconds_bucket", (*job, ("le", "60.0")))] == 1
    assert got[("orchestrator_run_duration_seconds_sum", job)] == 4030.0
