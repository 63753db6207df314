"""track_task: where one batch job or array task stands, from Slurm's rows, the accounting's
availability, the script's exit file and how long it has been unseen. Pure: no cluster, no
threads, no clock; the same rules the Slurm tests check against a real cluster."""

from __future__ import annotations

import pytest

from orchestrator.executors.slurm.parse import JobRow
from orchestrator.executors.slurm.tracking import Phase, Tracked, track_task
from orchestrator.store.base import RunState

GRACE = 600.0


def row(state: str, exit_code: int | None = None, complete: bool = True) -> JobRow:
    return JobRow("7", "7", None, "orch-x", state, exit_code, complete=complete)


def track(
    final: JobRow | None = None,
    live: JobRow | None = None,
    accounting: bool | None = True,
    exit_file: int | None = None,
    unseen_s: float = 0.0,
    can_resubmit: bool = True,
) -> Tracked:
    return track_task(final, live, accounting, lambda: exit_file, unseen_s, GRACE, can_resubmit)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("PENDING", RunState.PENDING),
        ("RUNNING", RunState.RUNNING),
        ("COMPLETING", RunState.RUNNING),
    ],
)
def test_a_task_in_squeue_is_active(state: str, expected: RunState) -> None:
    assert track(live=row(state)) == Tracked(Phase.ACTIVE, expected)


def test_sacct_has_the_last_word_with_its_exit_code() -> None:
    assert track(final=row("FAILED", 3), live=row("RUNNING")) == Tracked(
        Phase.ENDED, RunState.FAILED, 3, "FAILED"
    )
    assert track(final=row("CANCELLED by 0", 0)) == Tracked(
        Phase.ENDED, RunState.CANCELLED, 0, "CANCELLED by 0"
    )


def test_an_incomplete_accounting_row_is_not_an_end() -> None:
    """sacct's "job start" record may carry an end state before the job ended (End=Unknown):
    the squeue row decides, and without one the task is unknown, not failed."""
    assert track(final=row("FAILED", 0, complete=False), live=row("RUNNING")).phase == Phase.ACTIVE
    assert track(final=row("FAILED", 0, complete=False)).phase == Phase.UNKNOWN


def test_ended_in_squeue_waits_for_accounting_or_reads_the_exit_file() -> None:
    """With accounting, sacct lags: wait for its row. Without it, the exit file has the code."""
    assert track(live=row("COMPLETED"), accounting=True).phase == Phase.AWAITING_ACCOUNTING
    assert track(live=row("FAILED"), accounting=False, exit_file=2) == Tracked(
        Phase.ENDED, RunState.FAILED, 2, "FAILED"
    )


def test_unseen_is_unknown_until_the_grace_then_lost_or_its_exit_file() -> None:
    assert track(unseen_s=0.0).phase == Phase.UNKNOWN
    assert track(unseen_s=GRACE - 1).phase == Phase.UNKNOWN
    assert track(unseen_s=GRACE) == Tracked(Phase.ENDED, RunState.LOST, None, "LOST")
    assert track(unseen_s=GRACE, exit_file=0) == Tracked(Phase.ENDED, RunState.SUCCEEDED, 0, "LOST")


def test_without_accounting_an_exit_file_ends_an_unseen_task_at_once() -> None:
    assert track(accounting=False, exit_file=0) == Tracked(
        Phase.ENDED, RunState.SUCCEEDED, 0, "LOST"
    )
    assert track(accounting=None, exit_file=1).state == RunState.FAILED


def test_node_failure_resubmits_while_allowed_then_fails() -> None:
    assert track(final=row("NODE_FAIL", 0)).phase == Phase.RESUBMIT
    assert track(final=row("BOOT_FAIL", 0), can_resubmit=False) == Tracked(
        Phase.ENDED, RunState.FAILED, 0, "BOOT_FAIL"
    )


def test_an_unknown_slurm_state_never_ends_a_task() -> None:
    assert track(live=row("SOMETHING_NEW")).phase == Phase.ACTIVE
