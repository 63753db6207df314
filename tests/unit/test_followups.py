"""The follow-up rules in-process, in milliseconds: what a finished run sets going (a retry per
policy, the jobs that run `after` it, the runs that waited for it) and what a restarted daemon
does with follow-ups a crash left undone. A real SQLite store; no daemon, no processes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.clock import utcnow
from orchestrator.daemon.followups import FOLLOWUPS_KEY, FollowUps
from orchestrator.daemon.state import Shared
from orchestrator.executors.local import LocalExecutor
from orchestrator.manifests.document import load_manifest_bytes
from orchestrator.settings import Settings
from orchestrator.status import JobView
from orchestrator.store.base import RunState, Trigger
from orchestrator.store.sqlite import SQLiteStore

JOB = """\
apiVersion: orchestrator/v1
kind: Command
name: {name}
spec: {{command: ["true"]}}
{extra}
"""


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.store = SQLiteStore(tmp_path / "runs.db")
        settings = Settings(jobs_dir=tmp_path / "jobs", state_dir=tmp_path)
        self.shared = Shared(settings, {"local": LocalExecutor()})
        self.shared.store_ = self.store
        self.dispatched: list[tuple[str, Trigger, dict[str, Any]]] = []
        self.followups = FollowUps(self.shared, self.dispatch)
        self.tmp = tmp_path

    def dispatch(self, job: str, trigger: Trigger, **options: Any) -> None:
        self.dispatched.append((job, trigger, options))

    def job(self, name: str, extra: str = "") -> None:
        path = self.tmp / f"{name}.yaml"
        loaded = load_manifest_bytes(path, JOB.format(name=name, extra=extra).encode())
        self.shared.jobs[name] = JobView(path, loaded)

    def ended(self, job: str, state: RunState, attempt: int = 1) -> str:
        run = self.store.create_run(job, "h", Trigger.SCHEDULE, attempt=attempt)
        self.store.finish_run(run.run_id, state, exit_code=1)
        return run.run_id


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_a_failure_is_retried_per_policy_with_backoff_and_stored(h: Harness) -> None:
    h.job("sync", "policy: {retries: 2, retry_backoff: {base: 60, max: 90}}")
    first = h.ended("sync", RunState.FAILED)
    before = utcnow()
    h.followups.after_finish("sync", first, RunState.FAILED, 1)
    (retry,) = h.followups.retries
    assert (retry.job, retry.attempt, retry.retry_of) == ("sync", 2, first)
    assert timedelta(seconds=59) < retry.due - before < timedelta(seconds=62)
    assert h.store.get_job_state("sync", "retry")[0]["retry_of"] == first  # survives a restart
    second = h.ended("sync", RunState.TIMED_OUT, attempt=2)
    h.followups.after_finish("sync", second, RunState.TIMED_OUT, 2)
    assert max(r.due for r in h.followups.retries) - utcnow() < timedelta(seconds=91)  # capped
    third = h.ended("sync", RunState.LOST, attempt=3)
    h.followups.after_finish("sync", third, RunState.LOST, 3)  # retries spent
    assert len(h.followups.retries) == 2
    assert h.dispatched == []


def test_a_cancelled_run_and_a_suspended_job_are_not_retried(h: Harness) -> None:
    h.job("a", "policy: {retries: 3}")
    h.job("b", "policy: {retries: 3}\nsuspend: true")
    h.followups.after_finish("a", h.ended("a", RunState.CANCELLED), RunState.CANCELLED, 1)
    h.followups.after_finish("b", h.ended("b", RunState.FAILED), RunState.FAILED, 1)
    assert h.followups.retries == []


def test_a_success_starts_the_jobs_after_it_but_not_suspended_ones(h: Harness) -> None:
    h.job("build")
    h.job("test", "after: [build]")
    h.job("deploy", "after: [build]\nsuspend: true")
    h.followups.after_finish("build", h.ended("build", RunState.SUCCEEDED), RunState.SUCCEEDED, 1)
    assert h.dispatched == [("test", Trigger.AFTER, {"after_token": False})]


def test_a_stopping_daemon_stores_after_triggers_for_the_next(h: Harness) -> None:
    h.job("build")
    h.job("test", "after: [build]")
    run_id = h.ended("build", RunState.SUCCEEDED)
    h.followups.after_finish("build", run_id, RunState.SUCCEEDED, 1, start_runs=False)
    assert h.dispatched == []
    assert h.store.get_job_state("build", "pending_after") == [run_id]
    h.followups.recover(lambda run: None)  # the next daemon
    assert h.dispatched == [("test", Trigger.AFTER, {"after_token": False})]
    assert h.store.get_job_state("build", "pending_after") is None


def test_recovery_does_a_marked_follow_up_once(h: Harness) -> None:
    """A daemon died between recording a failure and storing its retry (the mark is there):
    the next one schedules the retry; a retry already pending is not doubled."""
    h.job("sync", "policy: {retries: 1}")
    run_id = h.ended("sync", RunState.FAILED)
    h.followups.mark("sync", run_id)
    h.followups.recover(lambda run: None)
    assert [r.retry_of for r in h.followups.retries] == [run_id]
    assert h.store.get_job_state("sync", FOLLOWUPS_KEY) is None
    h.followups.mark("sync", run_id)  # say the mark was left again
    h.followups.recover(lambda run: None)
    assert [r.retry_of for r in h.followups.retries] == [run_id]


def test_runs_waiting_for_a_required_job_start_or_stay_blocked(h: Harness) -> None:
    h.job("tok")
    h.job("work", "requires: [tok]")
    h.followups.wait_for("work", "tok", Trigger.MANUAL)
    h.followups.after_finish("tok", h.ended("tok", RunState.FAILED), RunState.FAILED, 1)
    assert h.dispatched == []  # blocked: the required job failed
    assert h.followups.waiting == {}
    h.followups.wait_for("work", "tok", Trigger.MANUAL)
    h.followups.after_finish("tok", h.ended("tok", RunState.SUCCEEDED), RunState.SUCCEEDED, 1)
    assert h.dispatched == [("work", Trigger.MANUAL, {"after_token": True})]


def test_a_due_retry_is_dispatched_and_forgotten(h: Harness) -> None:
    h.job("sync", "policy: {retries: 1, retry_backoff: 0}")
    run_id = h.ended("sync", RunState.FAILED)
    h.followups.after_finish("sync", run_id, RunState.FAILED, 1)
    h.followups.dispatch_due()
    assert h.dispatched == [
        ("sync", Trigger.RETRY, {"attempt": 2, "retry_of": run_id, "array": None})
    ]
    assert h.followups.retries == []
    assert h.store.get_job_state("sync", "retry") is None
