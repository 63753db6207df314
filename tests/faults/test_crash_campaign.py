"""The crash campaign: SIGKILL the daemon, run shims and job children at random moments, then
audit the store against the jobs' own side effects (see tests/faults/chaos/audit.py for
what each figure counts). The longer form is benchmarks/chaos.py."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from tests.faults.chaos.audit import AuditResult, audit
from tests.faults.chaos.jobs import DEFAULT_JOBS, FORBID_JOB
from tests.faults.chaos.records import Effect, RunRow, SkipLine
from tests.faults.chaos.run import run_campaign, stop_leftovers

CYCLES = 20  # the long form: benchmarks/chaos.py


@pytest.fixture
def campaign_root(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    stop_leftovers(tmp_path)  # after a failure mid-campaign: no shim or job outlives the test


@pytest.mark.slow
@pytest.mark.daemon
def test_crash_campaign_loses_duplicates_and_leaves_nothing(campaign_root: Path) -> None:
    """Twenty SIGKILLs of the daemon, shims and job children at random moments, then a clean
    run: no fire or promised retry is lost, nothing runs twice, no run is stuck, and the
    forbid job never overlaps itself."""
    # A failure here is a daemon bug until shown otherwise: the findings come with the log
    # lines and kills around them, and ORCH_CHAOS_SEED replays the kill sequence. The four
    # windows this campaign found (benchmarks/README.md, chaos.py) are closed.
    seed = int(os.environ.get("ORCH_CHAOS_SEED") or secrets.randbelow(2**31))
    print(f"crash campaign seed {seed} (ORCH_CHAOS_SEED={seed} reproduces the kill sequence)")
    result = run_campaign(campaign_root, CYCLES, seed)
    print(result.figures())
    report = f"seed {seed}\n{result.figures()}\n{result.findings()}"
    assert result.audit.fires_expected > 10, report  # the jobs did run between the kills
    assert sum(result.kills[t] for t in ("daemon", "shim", "child")) > CYCLES // 2, report
    assert result.audit.lost == [], report
    assert result.audit.duplicated == [], report
    assert result.audit.stuck == [], report
    assert result.audit.overlaps == [], report
    assert result.clean, report


# The audit itself, on hand-made rows: each finding it must not miss.

ANCHOR = 1_000_000.0
FORBID = next(p for p in DEFAULT_JOBS if p.name == FORBID_JOB)


def _row(run_id: str, k: int | None, state: str = "succeeded", **kw: object) -> RunRow:
    fields: dict = {
        "run_id": run_id,
        "job": FORBID_JOB,
        "trigger": "schedule",
        "attempt": 1,
        "state": state,
        "created_at": ANCHOR + (k or 0),
        "finished_at": ANCHOR + (k or 0) + 0.5,
        "exit_code": 0 if state == "succeeded" else None,
        "scheduled_for": None if k is None else ANCHOR + k,
        "retry_of": None,
    }
    fields.update(kw)
    return RunRow(**fields)


def _ran(run_id: str, start: float, end: float | None, code: int = 0) -> list[Effect]:
    out = [Effect("start", run_id, FORBID_JOB, start)]
    if end is not None:
        out.append(Effect("end", run_id, FORBID_JOB, end, code))
    return out


def _clean_history() -> tuple[list[RunRow], list[Effect]]:
    runs = [_row(f"r{k}", k) for k in (1, 2, 3)]
    effects = [e for k in (1, 2, 3) for e in _ran(f"r{k}", ANCHOR + k + 0.01, ANCHOR + k + 0.4)]
    return runs, effects


def _audit(
    runs: list[RunRow], effects: list[Effect], skips: Iterable[SkipLine] = ()
) -> AuditResult:
    return audit(
        [FORBID], runs, effects, list(skips), {FORBID_JOB: ANCHOR}, {FORBID_JOB: ANCHOR + 4.5}
    )


def test_audit_of_a_clean_history_finds_nothing() -> None:
    """Three fires, each run once with its start and end lines: every figure is 0."""
    runs, effects = _clean_history()
    result = _audit(runs, effects)
    assert result.clean
    assert result.fires_expected == 3
    assert result.fires_run == 3


def test_audit_counts_a_fire_without_record_as_lost_unless_a_skip_line_explains_it() -> None:
    """A fire with no run record, no missed record and no skip line is lost; a forbid skip
    line just after it accounts for it."""
    runs, effects = _clean_history()
    runs = [r for r in runs if r.run_id != "r2"]
    effects = [e for e in effects if e.run_id != "r2"]
    lost = _audit(runs, effects)
    assert len(lost.lost) == 1
    assert "fire #2" in lost.lost[0]
    skipped = _audit(runs, effects, [SkipLine(FORBID_JOB, "schedule", ANCHOR + 2.003)])
    assert skipped.lost == []
    assert skipped.fires_skipped == 1


def test_audit_finds_duplicates_overlaps_stuck_and_unrecorded_runs() -> None:
    """Two records of one fire, a run executed twice, runs of a forbid job that overlap, a run
    still running, and a job execution the store never recorded are each reported."""
    runs, effects = _clean_history()
    runs.append(_row("r2b", 2, trigger="catchup", finished_at=ANCHOR + 2.9))
    effects += _ran("r2b", ANCHOR + 2.2, None)  # killed: its end is the recorded finish
    effects += _ran("r3", ANCHOR + 3.5, ANCHOR + 3.6)
    runs.append(_row("r9", None, "running", trigger="manual", finished_at=None))
    effects += _ran("ghost", ANCHOR + 9, ANCHOR + 9.1)
    result = _audit(runs, effects)
    assert any("fire #2: 2 records" in d for d in result.duplicated)
    assert any("r3: executed 2 times" in d for d in result.duplicated)
    assert any("r2b started" in o for o in result.overlaps)
    assert result.stuck == ["r9 (chaos-forbid): running"]
    assert any("ghost" in lost and "no run record" in lost for lost in result.lost)


def test_audit_checks_every_promised_retry_once() -> None:
    """A failed run with retries left promises one retry: none recorded is lost, two are
    duplicated, and a retry no failure promised is reported."""
    runs, effects = _clean_history()
    runs[0] = _row("r1", 1, "lost")
    lost = _audit(runs, effects)
    assert len(lost.lost) == 1
    assert "retry attempt 2 of r1" in lost.lost[0]
    twice = [
        _row(f"x{i}", None, trigger="retry", attempt=2, retry_of="r1", exit_code=None)
        for i in (1, 2)
    ]
    duplicated = _audit(runs + twice, effects)
    assert duplicated.lost == []
    assert any("2 retries of r1" in d for d in duplicated.duplicated)
    stray = _row("x3", None, trigger="retry", attempt=2, retry_of="r2", exit_code=None)
    unpromised = _audit([*runs, twice[0], stray], effects)
    assert any("no failed run promised" in d for d in unpromised.duplicated)
