"""The audit (``audit``, a pure function over plain rows) compares the store (``runs.sqlite``),
the side-effect file and the daemon's log. Its figures, each of which must be 0:

- **lost**: something the policy promised that left no trace, or an execution the store does
  not know. Precisely, the sum of:

  - *fires*: a grid time ``anchor + k * every`` (k >= 1; ``anchor`` is the job's stored
    ``anchor``, read before the last rewrite) up to one interval before the daemon rescheduled
    the job at the last rewrite (its ``job_scheduled`` line) that has no run record with
    that ``scheduled_for`` (trigger ``schedule`` or ``catchup``, or a ``missed`` record) and
    no ``run_skipped_concurrency`` log line that accounts for it. A ``forbid`` skip writes no
    record, and its log line names neither the fire time nor the run it retried, so a skip
    line (trigger schedule/catchup) is matched to the latest unaccounted fire at most
    ``SKIP_MATCH_WINDOW_S`` before it. Fires in the last interval before the reschedule may
    have been replaced by it; they are counted only when recorded;
  - *retries*: a run that ended ``failed``, ``timed_out`` or ``lost`` with ``attempt <=
    retries`` promises one run with ``retry_of`` = its id and ``attempt + 1``; one that has
    no record and no matching skip line (trigger retry, at or after its due time) is lost;
  - *unrecorded executions*: a ``start`` line whose run id has no record of that job;
  - *recorded without effect*: a record whose exit code says the job exited by itself
    (``exit_code >= 0``) without the matching ``start`` line and ``end`` line with that code.

  A run that ends ``lost`` or ``failed`` because its shim or child was killed is not lost: it
  is recorded, and retried per its policy (the retry is checked as above). A run whose shim
  died after its job had finished is retried although its work was done: runs are
  at-least-once, never silently dropped.
- **duplicated**: a run id with more than one ``start`` line; a fire time with more than one
  record; a retry slot (``retry_of``, ``attempt``) with more than one record; a retry record
  that no failed run promised.
- **stuck**: a run still ``pending``/``running`` when the settle deadline passed, or after
  the clean stop.
- **overlaps** (``forbid`` job only): a run whose ``start`` line lies before the end of an
  earlier run of the same job. A run's end is its ``end`` line, or, without one (its shim or
  child was killed), the ``finished_at`` the store recorded, which comes after the job was
  killed (the daemon kills an orphaned job before it records the run ``lost``).

Two more figures must be 0 as well: daemon exits the campaign did not cause, and campaign
processes (shims, job children) still alive after the clean stop.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from tests.faults.chaos.jobs import JobPlan
from tests.faults.chaos.records import Effect, RunRow, SkipLine

# A skip line is written within milliseconds of its fire (schedule) or at the start-up that
# caught the fire up (catchup, within a second or two of the fire on this machine).
SKIP_MATCH_WINDOW_S = 5.0
# The daemon and this process read the same wall clock; a small tolerance for rounding.
CLOCK_TOLERANCE_S = 0.01

ACTIVE = {"pending", "running"}
# What `policy.retries` retries (README, "Crashes lose nothing"), written out here rather than
# imported from the daemon, so that the audit does not agree with the daemon by construction.
RETRYABLE = {"failed", "timed_out", "lost", "interrupted"}
FIRE_TRIGGERS = {"schedule", "catchup"}


@dataclass
class AuditResult:
    """The audit's figures; each list holds one human-readable line per finding."""

    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    overlaps: list[str] = field(default_factory=list)
    fires_expected: int = 0
    fires_run: int = 0
    fires_missed: int = 0
    fires_skipped: int = 0
    retries_promised: int = 0
    retries_run: int = 0
    retries_skipped: int = 0
    retries_stored: int = 0
    off_grid: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.stuck or self.overlaps or self.off_grid)


def audit(
    plans: Iterable[JobPlan],
    runs: list[RunRow],
    effects: list[Effect],
    skips: list[SkipLine],
    anchors: dict[str, float],
    grid_ends: dict[str, float],
    stuck_run_ids: Iterable[str] = (),
    stored_retries: Iterable[tuple[str, int]] = (),
    retry_dues: dict[tuple[str, int], float] | None = None,
) -> AuditResult:
    """Compare the store's records with the jobs' side effects and the log; see the module
    docstring for what each figure counts. Pure: plain data in, findings out.

    ``stored_retries`` are the (retry_of, attempt) pairs the daemon left stored for its
    successor when it stopped (a run that failed during the drain): kept, not lost.
    ``retry_dues`` (from ``read_retry_dues``) place the retries the daemon scheduled, so that
    each forbid skip line is matched to the retry that was due just before it."""
    result = AuditResult()
    by_id = {r.run_id: r for r in runs}
    for run_id in sorted(set(stuck_run_ids) | {r.run_id for r in runs if r.state in ACTIVE}):
        row = by_id.get(run_id)
        result.stuck.append(f"{run_id} ({row.job if row else '?'}): {row.state if row else '?'}")
    starts: dict[str, list[Effect]] = defaultdict(list)
    ends: dict[str, list[Effect]] = defaultdict(list)
    for effect in effects:
        (starts if effect.kind == "start" else ends)[effect.run_id].append(effect)
    for run_id, lines in sorted(starts.items()):
        if len(lines) > 1:
            result.duplicated.append(f"{run_id}: executed {len(lines)} times (start lines)")
        row = by_id.get(run_id)
        if row is None or row.job != lines[0].job:
            result.lost.append(f"{run_id} ({lines[0].job}): executed, but no run record")
    for row in runs:
        if row.exit_code is None or row.exit_code < 0:
            continue  # killed, lost or never started: its lines may be partial
        end_codes = [e.exit_code for e in ends.get(row.run_id, [])]
        if not starts.get(row.run_id) or row.exit_code not in end_codes:
            result.lost.append(
                f"{row.run_id} ({row.job}): recorded {row.state} with exit code {row.exit_code}, "
                f"but the job's lines say start={bool(starts.get(row.run_id))} ends={end_codes}"
            )
    for plan in plans:
        job_runs = [r for r in runs if r.job == plan.name]
        job_skips = [s for s in skips if s.job == plan.name]
        if plan.name in anchors and plan.name in grid_ends:
            _audit_fires(
                plan, job_runs, job_skips, anchors[plan.name], grid_ends[plan.name], result
            )
        _audit_retries(plan, job_runs, job_skips, set(stored_retries), retry_dues or {}, result)
        if plan.concurrency == "forbid":
            _audit_overlaps(plan, job_runs, starts, ends, result)
    return result


def _audit_fires(
    plan: JobPlan,
    runs: list[RunRow],
    skips: list[SkipLine],
    anchor: float,
    grid_end: float,
    result: AuditResult,
) -> None:
    records: dict[int, list[RunRow]] = defaultdict(list)
    for row in runs:
        if row.scheduled_for is None or row.trigger not in FIRE_TRIGGERS:
            continue
        k = round((row.scheduled_for - anchor) / plan.every_s)
        if k < 1 or abs(anchor + k * plan.every_s - row.scheduled_for) > CLOCK_TOLERANCE_S:
            result.off_grid.append(f"{row.run_id} ({plan.name}): scheduled_for off the grid")
            continue
        records[k].append(row)
    for k, rows in sorted(records.items()):
        if len(rows) > 1:
            result.duplicated.append(
                f"{plan.name} fire #{k}: {len(rows)} records "
                + ", ".join(f"{r.run_id}={r.trigger}/{r.state}" for r in rows)
            )
    last_required = math.floor((grid_end - plan.every_s - anchor) / plan.every_s)
    unaccounted = [k for k in range(1, last_required + 1) if k not in records]
    # Match each skip line to the latest unaccounted fire not after it (and not too long before).
    fire_skips = sorted(s.at for s in skips if s.trigger in FIRE_TRIGGERS)
    open_fires = list(unaccounted)
    for at in fire_skips:
        i = bisect.bisect_right(open_fires, (at + CLOCK_TOLERANCE_S - anchor) / plan.every_s) - 1
        if i >= 0 and at - (anchor + open_fires[i] * plan.every_s) <= SKIP_MATCH_WINDOW_S:
            open_fires.pop(i)
            result.fires_skipped += 1
    required = range(1, last_required + 1)
    result.fires_expected += len(required)
    for k in required:
        rows = records.get(k, [])
        if any(r.state == "missed" for r in rows):
            result.fires_missed += 1
        elif rows:
            result.fires_run += 1
    for k in open_fires:
        result.lost.append(
            f"{plan.name} fire #{k} at {anchor + k * plan.every_s:.3f}: no run record, no missed "
            "record, no skip line"
        )


def _audit_retries(
    plan: JobPlan,
    runs: list[RunRow],
    skips: list[SkipLine],
    stored: set[tuple[str, int]],
    dues: dict[tuple[str, int], float],
    result: AuditResult,
) -> None:
    retry_rows: dict[tuple[str, int], list[RunRow]] = defaultdict(list)
    for row in runs:
        if row.trigger == "retry":
            retry_rows[(row.retry_of or "", row.attempt)].append(row)
    promised: dict[tuple[str, int], float] = {}
    for row in runs:
        if row.state in RETRYABLE and row.attempt <= plan.retries and row.finished_at is not None:
            # When it was due: as the daemon logged it, else no earlier than this (the daemon
            # counts the backoff from when it saw the run end, which is not before its end).
            delay = plan.retry_backoff_s * 2 ** (row.attempt - 1)
            slot = (row.run_id, row.attempt + 1)
            promised[slot] = dues.get(slot, row.finished_at + delay)
    result.retries_promised += len(promised)
    for slot, rows in sorted(retry_rows.items()):
        if slot not in promised:
            result.duplicated.append(
                f"{plan.name}: retry {', '.join(r.run_id for r in rows)} of {slot[0]} attempt "
                f"{slot[1]} that no failed run promised"
            )
        elif len(rows) > 1:
            result.duplicated.append(
                f"{plan.name}: {len(rows)} retries of {slot[0]} attempt {slot[1]}: "
                + ", ".join(r.run_id for r in rows)
            )
    missing = {slot: due for slot, due in promised.items() if slot not in retry_rows}
    result.retries_run += len(promised) - len(missing)
    for slot in [slot for slot in missing if slot in stored]:
        del missing[slot]
        result.retries_stored += 1
    # A forbid skip of a retry happens when it comes due (or at the next start-up): each skip
    # line goes to the unaccounted retry that was due last before it.
    for skip in sorted(s.at for s in skips if s.trigger == "retry"):
        due_before = [
            (due, slot) for slot, due in missing.items() if due <= skip + CLOCK_TOLERANCE_S
        ]
        if due_before:
            del missing[max(due_before)[1]]
            result.retries_skipped += 1
    for slot, due in sorted(missing.items(), key=lambda item: item[1]):
        result.lost.append(
            f"{plan.name}: retry attempt {slot[1]} of {slot[0]} (due {due:.3f}) has no record, no "
            "skip line and is not stored"
        )


def _audit_overlaps(
    plan: JobPlan,
    runs: list[RunRow],
    starts: dict[str, list[Effect]],
    ends: dict[str, list[Effect]],
    result: AuditResult,
) -> None:
    finished = {r.run_id: r.finished_at for r in runs}
    intervals = []
    for run_id, lines in starts.items():
        if lines[0].job != plan.name:
            continue
        end_lines = ends.get(run_id)
        end = end_lines[0].at if end_lines else finished.get(run_id)
        if end is None:
            continue  # no end known: the run is stuck or unrecorded, counted there
        intervals.append((min(e.at for e in lines), end, run_id))
    intervals.sort()
    latest_end, latest_run = -math.inf, ""
    for start, end, run_id in intervals:
        if start < latest_end:
            result.overlaps.append(
                f"{plan.name}: {run_id} started {latest_end - start:.3f} s before {latest_run} "
                "ended"
            )
        if end > latest_end:
            latest_end, latest_run = end, run_id
