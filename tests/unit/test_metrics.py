"""The metrics of one status answer, read back with prometheus_client's own parser."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.clock import utcnow
from orchestrator.metrics import registry


def _samples(status: dict[str, Any], runs: dict[tuple[str, str], int]) -> dict[tuple, float]:
    text = generate_latest(registry(status, runs)).decode()
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
