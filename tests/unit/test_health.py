"""The deployment's health from status's data: one word, one line, the exit code (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.health import DEGRADED, DOWN, OK, assess


def _job(name: str, state: str | None = "succeeded", **kw: Any) -> dict[str, Any]:
    last = {"state": state, "run_id": f"{name}-r1"} if state else None
    return {
        "name": name,
        "path": f"/j/{name}.yaml",
        "valid": True,
        "suspended": False,
        "last_run": last,
        **kw,
    }


def _status(jobs: list[dict[str, Any]], **daemon: Any) -> dict[str, Any]:
    return {"daemon": {"running": True, "pid": 7, "host": "login01", **daemon}, "jobs": jobs}


def test_all_well() -> None:
    health = assess(_status([_job("a"), _job("b", state=None)]))
    assert health.code == OK
    assert health.line == "ORCHESTRATOR OK - 2 job(s) valid, daemon pid 7 on login01"


@pytest.mark.parametrize("state", ["failed", "timed_out", "lost"])
def test_a_last_run_that_did_not_succeed_degrades(state: str) -> None:
    health = assess(_status([_job("a"), _job("nightly", state=state)]))
    assert health.code == DEGRADED
    assert health.line == f"ORCHESTRATOR WARNING - nightly: last run {state} (nightly-r1)"


def test_a_suspended_jobs_old_failure_does_not() -> None:
    assert assess(_status([_job("old", state="failed", suspended=True)])).code == OK


def test_invalid_manifests_an_open_breaker_and_a_dead_store_are_each_named() -> None:
    jobs = [_job("a"), {**_job("bad"), "valid": False}, _job("late", overdue="no success in 26h")]
    health = assess(
        _status(
            jobs,
            store={"ok": False, "error": "database is locked"},
            executors={"slurm": {"breaker": "open", "last_error": "Socket timed out"}},
        )
    )
    assert health.code == DEGRADED
    assert health.reasons == [
        "1 invalid manifest(s): bad.yaml",
        "late: no success in 26h",
        "run store unavailable: database is locked",
        "slurm: submission paused (Socket timed out)",
    ]


def test_a_daemon_that_is_not_running_is_critical() -> None:
    health = assess({"daemon": {"running": False, "state_dir": "/s"}, "jobs": [_job("a")]})
    assert health.code == DOWN
    assert health.line == "ORCHESTRATOR CRITICAL - the daemon is not running (state directory /s)"
    assert health.to_json()["state"] == "down"


def test_a_job_is_overdue_when_its_expected_success_did_not_come() -> None:
    """expect.success_within: from the last success, else from when the schedule started; a
    job without a schedule is judged only once it has succeeded; suspended: never."""
    from datetime import UTC, datetime, timedelta

    from orchestrator.manifests.models import validate_manifest
    from orchestrator.status import Since, overdue

    m = validate_manifest(
        {
            "apiVersion": "orchestrator/v1",
            "kind": "Command",
            "name": "nightly",
            "schedule": {"cron": "0 3 * * *"},
            "expect": {"success_within": "26h"},
            "spec": {"command": ["true"]},
        }
    )
    now = datetime(2026, 11, 29, 12, tzinfo=UTC)
    fresh = Since(now - timedelta(hours=25), None)
    stale = Since(now - timedelta(hours=30), None)
    assert overdue(m, fresh, now) is None
    assert overdue(m, stale, now) == "overdue: last success 1d6h ago (expected within 1d2h)"
    never = Since(None, now - timedelta(days=3))
    assert overdue(m, never, now) == "overdue: no success in 3d (expected within 1d2h)"
    assert overdue(m, Since(None, None), now) is None
    assert overdue(m.model_copy(update={"suspend": True}), stale, now) is None
