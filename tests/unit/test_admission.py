"""Admission: whether one run starts, is skipped (and why) or waits for a job it requires.
A pure function: every rule is checked here in-process, without a daemon, a store or a clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.daemon.admission import (
    VALID_MARGIN_S,
    Defer,
    Skip,
    Start,
    Unmet,
    admit,
    first_unmet,
    valid_until,
)
from orchestrator.store.base import RunRecord, RunState, Trigger

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def run(run_id: str, job: str = "j", result: dict[str, object] | None = None) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        job=job,
        manifest_hash="h",
        trigger="schedule",
        attempt=1,
        state=RunState.RUNNING,
        created_at=NOW,
        started_at=NOW,
        finished_at=None,
        exit_code=None,
        log_path=None,
        run_dir=None,
        executor="local",
        pid=None,
        pid_start_time=None,
        scheduled_for=None,
        retry_of=None,
        message=None,
        result=dict(result or {}),
    )


def decide(**kwargs: object) -> object:
    args: dict[str, object] = {
        "job": "j",
        "trigger": Trigger.SCHEDULE,
        "concurrency": "allow",
        "max_active": None,
        "active": [],
        "unmet": None,
    }
    args.update(kwargs)
    return admit(**args)  # type: ignore[arg-type]


def test_a_job_with_nothing_active_starts() -> None:
    assert decide() == Start()


@pytest.mark.parametrize(
    ("concurrency", "expected"),
    [("allow", Start()), ("replace", "replace"), ("forbid", "run_skipped_concurrency")],
)
def test_concurrency_policy_with_a_run_active(concurrency: str, expected: object) -> None:
    """allow starts beside it, replace starts after cancelling it, forbid skips and says which
    run is in the way."""
    active = [run("r1")]
    decision = decide(concurrency=concurrency, active=active)
    if expected == "replace":
        assert decision == Start(replace=(active[0],))
    elif isinstance(expected, str):
        assert isinstance(decision, Skip)
        assert decision.event == expected
        assert "r1" in decision.message
        assert "forbid" in decision.message
    else:
        assert decision == expected


def test_the_executors_limit_skips_at_the_limit_only() -> None:
    """max_active (Slurm's max_queued) counts the job's active runs; the message names the
    setting the executor gave."""
    limit = (2, "executor.slurm.max_queued")
    assert decide(max_active=limit, active=[run("r1")]) == Start()
    decision = decide(max_active=limit, active=[run("r1"), run("r2")])
    assert isinstance(decision, Skip)
    assert decision.event == "run_skipped_max_active"
    assert "executor.slurm.max_queued: 2" in decision.message


def test_forbid_is_checked_before_the_limit() -> None:
    decision = decide(concurrency="forbid", max_active=(1, "x"), active=[run("r1")])
    assert isinstance(decision, Skip)
    assert decision.event == "run_skipped_concurrency"


def test_an_unmet_requirement_defers_then_blocks() -> None:
    """Deferred (waits for the required job) before anything else is looked at; once that job
    has run and it is still not enough, blocked rather than deferred again (no loop)."""
    unmet = Unmet("tok", "no validity known yet")
    assert decide(unmet=unmet, concurrency="forbid", active=[run("r1")]) == Defer(
        "tok", "no validity known yet"
    )
    blocked = decide(unmet=unmet, after_required=True)
    assert isinstance(blocked, Skip)
    assert blocked.event == "run_blocked_by_required_job"
    assert dict(blocked.detail)["required_job"] == "tok"


def test_valid_until_reads_the_newest_published_time() -> None:
    """Newest first: the first run that published one counts; a time without a zone is UTC;
    an unreadable one comes back as text; none at all is None."""
    later = (NOW + timedelta(hours=5)).isoformat()
    history = [run("r3"), run("r2", result={"valid_until": "2026-11-29T20:00:00"}), run("r1")]
    history[2].result["valid_until"] = later
    assert valid_until(history) == datetime(2026, 11, 29, 20, 0, tzinfo=UTC)
    assert valid_until([run("r1", result={"valid_until": "soon"})]) == "soon"
    assert valid_until([run("r1", result={"not_after": later})]) is None


def test_first_unmet_needs_the_run_and_the_margin() -> None:
    """A validity must outlast now + the run's timeout + VALID_MARGIN_S; unknown required jobs
    (not in ``valid``) are passed over; the first unmet one is named."""
    timeout = 3600.0
    enough = NOW + timedelta(seconds=timeout + VALID_MARGIN_S + 1)
    short = NOW + timedelta(seconds=timeout + VALID_MARGIN_S - 1)
    assert first_unmet(["a"], {"a": enough}, NOW, timeout) is None
    unmet = first_unmet(["gone", "a", "b"], {"a": short, "b": None}, NOW, timeout)
    assert unmet is not None
    assert unmet.job == "a"
    assert "before the run could end" in unmet.reason
    unmet = first_unmet(["b"], {"b": None}, NOW, timeout)
    assert unmet == Unmet("b", "no validity known yet")
    assert first_unmet(["gone"], {}, NOW, timeout) is None
