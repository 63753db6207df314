"""A crash campaign against a real daemon, and an audit of what it recorded.

The campaign (``run_campaign``) starts a real ``orchestrator run`` (``DaemonHarness``) with two
``every: 1s`` jobs whose command is ``JOB_SCRIPT``: it appends ``start`` and ``end`` lines, with
the run id the daemon gave it (``$ORCH_RUN_ID``) and the wall-clock time, to a side-effect file
opened with ``O_APPEND``, sleeps a short random time and exits 0 (or 1, now and then, so that
retries happen without kills too):

- ``chaos-forbid``: ``concurrency: forbid``, ``retries: 2``, ``retry_backoff: 1s``,
  ``catchup: 30s`` (a restart runs the newest missed fire and records the rest ``missed``);
- ``chaos-allow``: ``concurrency: allow``, ``retries: 1``, no catch-up window (every missed fire
  is recorded ``missed``); its runs often outlive the interval, so several run at once.

Each cycle sleeps a random short time, then sends ``SIGKILL`` to one of: the daemon (restarted
after a random short down time; in half of these cycles the new daemon is killed again within
0.15 s of its ``daemon_starting`` line, while it adopts runs and catches up missed fires), a random
live run shim, or a random live job child (its whole process group).
Victims are found in ``/proc`` by their command lines, not through the daemon's bookkeeping, so
a shim still starting (its run ``pending``) can be hit too. After the last cycle the daemon is
brought up, both manifests are rewritten with ``every: 1h`` (a schedule change: the 1 s grid
ends there, nothing fires for an hour, and promised retries still run; a suspended job's retries
would be dropped), the campaign waits until no run is active and no retry is pending, stops the
daemon with SIGTERM, and audits.

The audit (``audit``, a pure function over plain rows) compares the store (``runs.sqlite``),
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
import json
import math
import os
import random
import re
import signal
import sqlite3
import sys
import textwrap
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.control import request
from orchestrator.errors import OrchestratorError
from orchestrator.procinfo import is_same_process, process_start_time
from tests.conftest import DaemonHarness

TARGETS = ("daemon", "shim", "child")
# Not a kill: SIGSTOP the daemon for up to ``max_freeze_s``, then SIGCONT (a suspended VM or
# laptop, a ^Z). Not in the default targets: see benchmarks/README.md.
ALL_TARGETS = (*TARGETS, "freeze")
FORBID_JOB = "chaos-forbid"
ALLOW_JOB = "chaos-allow"
# A skip line is written within milliseconds of its fire (schedule) or at the start-up that
# caught the fire up (catchup, within a second or two of the fire on this machine).
SKIP_MATCH_WINDOW_S = 5.0
# The daemon and this process read the same wall clock; a small tolerance for rounding.
CLOCK_TOLERANCE_S = 0.01
# The interval the jobs are rescheduled to when the kills are over: nothing fires while the
# campaign settles and stops.
QUIET_EVERY_S = 3600.0

# The job: one O_APPEND write per line (atomic for lines this short), so lines from runs that
# overlap never interleave, and a kill leaves whole lines only.
JOB_SCRIPT = textwrap.dedent(
    """\
    import os, random, sys, time
    effects, job, min_s, max_s, fail_fraction, seed = sys.argv[1:7]
    run_id = os.environ["ORCH_RUN_ID"]
    rng = random.Random(seed + ":" + run_id)
    sleep_s = rng.uniform(float(min_s), float(max_s))
    code = 1 if rng.random() < float(fail_fraction) else 0

    def line(text):
        fd = os.open(effects, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (text + "\\n").encode())
        finally:
            os.close(fd)

    line(f"start {run_id} {job} {os.getpid()} {time.time():.6f}")
    time.sleep(sleep_s)
    line(f"end {run_id} {job} {os.getpid()} {time.time():.6f} {code}")
    sys.exit(code)
    """
)


@dataclass(frozen=True)
class JobPlan:
    """One campaign job: its schedule, policy and how long and how often its command fails."""

    name: str
    concurrency: str
    every_s: float
    retries: int
    retry_backoff_s: float
    catchup_s: float | None
    min_sleep_s: float
    max_sleep_s: float
    fail_fraction: float

    def manifest(
        self, python: str, script: Path, effects: Path, seed: int, every_s: float | None = None
    ) -> str:
        """The job's manifest; ``every_s`` replaces the schedule's interval (and drops the
        catch-up window)."""
        catchup = (
            f", catchup: {self.catchup_s:g}s" if self.catchup_s is not None and not every_s else ""
        )
        argv = [
            python,
            "-I",
            "-S",
            str(script),
            str(effects),
            self.name,
            f"{self.min_sleep_s:g}",
            f"{self.max_sleep_s:g}",
            f"{self.fail_fraction:g}",
            str(seed),
        ]
        return (
            "apiVersion: orchestrator/v1\n"
            "kind: Command\n"
            f"name: {self.name}\n"
            f"schedule: {{every: {every_s or self.every_s:g}s{catchup}}}\n"
            f"policy: {{concurrency: {self.concurrency}, retries: {self.retries}, "
            f"retry_backoff: {self.retry_backoff_s:g}s, kill_grace: 1s, history: 1000000}}\n"
            "spec:\n"
            f"  command: {json.dumps(argv)}\n"
        )


DEFAULT_JOBS = (
    JobPlan(FORBID_JOB, "forbid", 1.0, 2, 1.0, 30.0, 0.1, 1.4, 0.1),
    JobPlan(ALLOW_JOB, "allow", 1.0, 1, 1.0, None, 0.1, 2.0, 0.1),
)


# --------------------------------------------------------------------------- plain data


@dataclass(frozen=True)
class RunRow:
    """The columns of one run record the audit reads (times as epoch seconds)."""

    run_id: str
    job: str
    trigger: str
    attempt: int
    state: str
    created_at: float
    finished_at: float | None
    exit_code: int | None
    scheduled_for: float | None
    retry_of: str | None


@dataclass(frozen=True)
class Effect:
    """One line of the side-effect file."""

    kind: str  # start | end
    run_id: str
    job: str
    at: float
    exit_code: int | None = None


@dataclass(frozen=True)
class SkipLine:
    """A ``run_skipped_concurrency`` line of the daemon's log."""

    job: str
    trigger: str
    at: float


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


def _epoch(value: str | None) -> float | None:
    return None if value is None else datetime.fromisoformat(value).timestamp()


def read_runs(db_path: Path) -> list[RunRow]:
    """Every run record in the store, oldest first (read with sqlite3, not through the CLI)."""
    conn = sqlite3.connect(str(db_path), timeout=10)
    try:
        rows = conn.execute(
            "SELECT run_id, job, trigger, attempt, state, created_at, finished_at, exit_code, "
            "scheduled_for, retry_of FROM runs ORDER BY created_at, run_id"
        ).fetchall()
    finally:
        conn.close()
    out = []
    for run_id, job, trigger, attempt, state, created, finished, code, sched, retry_of in rows:
        created_at = _epoch(created)
        assert created_at is not None  # NOT NULL column
        out.append(
            RunRow(
                run_id,
                job,
                trigger,
                int(attempt),
                state,
                created_at,
                _epoch(finished),
                code,
                _epoch(sched),
                retry_of,
            )
        )
    return out


def read_job_state(db_path: Path, key: str) -> dict[str, Any]:
    """``{job: value}`` of one job_state key."""
    conn = sqlite3.connect(str(db_path), timeout=10)
    try:
        rows = conn.execute("SELECT job, value FROM job_state WHERE key = ?", (key,)).fetchall()
    finally:
        conn.close()
    return {job: json.loads(value) for job, value in rows}


def read_effects(path: Path) -> list[Effect]:
    """The side-effect file's lines; a line that is not whole is an error (writes are atomic)."""
    if not path.exists():
        return []
    out = []
    for number, text in enumerate(path.read_text().splitlines(), 1):
        parts = text.split()
        if len(parts) == 5 and parts[0] == "start":
            out.append(Effect("start", parts[1], parts[2], float(parts[4])))
        elif len(parts) == 6 and parts[0] == "end":
            out.append(Effect("end", parts[1], parts[2], float(parts[4]), int(parts[5])))
        else:
            raise ValueError(f"{path}:{number}: torn or unknown side-effect line {text!r}")
    return out


def read_skips(events: Iterable[dict[str, Any]]) -> list[SkipLine]:
    """The daemon's ``run_skipped_concurrency`` lines (a forbid skip writes no run record)."""
    out = []
    for event in events:
        if event.get("event") == "run_skipped_concurrency":
            at = _epoch(event.get("timestamp"))
            if at is not None:
                out.append(SkipLine(str(event.get("job")), str(event.get("trigger")), at))
    return out


def read_retry_dues(events: Iterable[dict[str, Any]]) -> dict[tuple[str, int], float]:
    """``{(retry_of, attempt): due}`` from the daemon's ``retry_scheduled`` lines (the line's
    time plus its ``delay_s``): when each retry the daemon scheduled was due."""
    out: dict[tuple[str, int], float] = {}
    for event in events:
        if event.get("event") != "retry_scheduled":
            continue
        at = _epoch(event.get("timestamp"))
        if at is not None and event.get("run_id") and event.get("attempt") is not None:
            key = (str(event["run_id"]), int(event["attempt"]))
            out.setdefault(key, at + float(event.get("delay_s") or 0.0))
    return out


# --------------------------------------------------------------------------- the audit

ACTIVE = {"pending", "running"}
# What `policy.retries` retries (README, "Crashes lose nothing"), written out here rather than
# imported from the daemon, so that the audit does not agree with the daemon by construction.
RETRYABLE = {"failed", "timed_out", "lost", "interrupted"}
FIRE_TRIGGERS = {"schedule", "catchup"}


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


# --------------------------------------------------------------------------- the campaign


@dataclass
class CampaignResult:
    """What a campaign did and what its audit found."""

    seed: int
    cycles: int
    kills: Counter[str]
    daemon_starts: int
    unexpected_exits: list[str]
    orphans: list[str]
    stop_exit_code: int | None
    runs_recorded: int
    states: Counter[str]
    audit: AuditResult
    wall_s: float
    root: Path
    events: list[dict[str, Any]] = field(default_factory=list, repr=False)
    timeline: list[tuple[float, str]] = field(default_factory=list, repr=False)

    @property
    def clean(self) -> bool:
        return (
            self.audit.clean
            and not self.unexpected_exits
            and not self.orphans
            and self.stop_exit_code == 0
        )

    def figures(self) -> str:
        """The campaign's figures, one per line."""
        a = self.audit
        kills = (
            f"daemon {self.kills['daemon']} ({self.kills['daemon (before it answered)']} while "
            f"starting), shim {self.kills['shim']}, child {self.kills['child']}"
        )
        if self.kills["freeze"]:
            kills += f"; SIGSTOP/SIGCONT of the daemon {self.kills['freeze']}"
        none_alive = ", ".join(f"{t} {self.kills[t + ' (none alive)']}" for t in ("shim", "child"))
        states = ", ".join(f"{s} {n}" for s, n in sorted(self.states.items()))
        lines = [
            f"seed                     {self.seed}  (ORCH_CHAOS_SEED={self.seed} reproduces "
            "the kill sequence)",
            f"cycles                   {self.cycles}",
            f"kills (SIGKILL)          {kills}; nothing alive to kill: {none_alive}",
            f"daemon starts            {self.daemon_starts}",
            f"runs recorded            {self.runs_recorded} ({states})",
            f"fires expected           {a.fires_expected}: run {a.fires_run}, recorded missed "
            f"{a.fires_missed}, skipped by forbid (log) {a.fires_skipped}",
            f"retries promised         {a.retries_promised}: run {a.retries_run}, skipped by "
            f"forbid (log) {a.retries_skipped}, stored for a next daemon {a.retries_stored}",
            f"lost                     {len(a.lost)}",
            f"duplicated               {len(a.duplicated)}",
            f"stuck                    {len(a.stuck)}",
            f"overlaps (forbid job)    {len(a.overlaps)}",
            f"off-grid fires           {len(a.off_grid)}",
            f"daemon exits not caused  {len(self.unexpected_exits)}",
            f"orphans after stop       {len(self.orphans)}",
            f"clean stop exit code     {self.stop_exit_code}",
            f"wall time                {self.wall_s:.1f} s",
        ]
        return "\n".join(lines)

    def findings(self) -> str:
        """Every finding, one per line (empty when clean)."""
        a = self.audit
        out = []
        for name, items in (
            ("lost", a.lost),
            ("duplicated", a.duplicated),
            ("stuck", a.stuck),
            ("overlap", a.overlaps),
            ("off-grid", a.off_grid),
            ("daemon exit", self.unexpected_exits),
            ("orphan", self.orphans),
        ):
            out += [f"{name}: {item}" for item in items]
        text = "\n".join(out)
        run_ids = sorted(set(RUN_ID.findall(text)))
        moments = [float(t) for t in re.findall(r"\b(?:at|due) (\d{9,}\.\d+)", text)]
        if run_ids or moments:
            out.append("what the daemon logged around these findings, and the campaign's kills:")
            out += trace(run_ids, moments, self.events, self.timeline)
        return "\n".join(out)


RUN_ID = re.compile(r"\b\d{8}T\d{6}Z-[0-9a-f]{6}\b")
_TRACE_KEYS = (
    "job",
    "run_id",
    "trigger",
    "state",
    "attempt",
    "active_run",
    "next_run",
    "missed",
    "catching_up",
    "message",
    "error",
)
_QUIET_EVENTS = {"reconciled", "watching", "lease_takeover"}


def trace(
    run_ids: Iterable[str],
    moments: Iterable[float],
    events: list[dict[str, Any]],
    timeline: list[tuple[float, str]],
) -> list[str]:
    """What happened around each finding: the daemon's log lines from 2 s before to 2 s after
    each line that names one of ``run_ids`` and each of ``moments`` (epoch seconds), each with
    the pid of the daemon that wrote it, interleaved with the campaign's kills."""
    wanted = set(run_ids)
    windows = [(t - 2, t + 2) for t in moments]
    for event in events:
        at = _epoch(event.get("timestamp"))
        if at is not None and wanted & set(RUN_ID.findall(json.dumps(event))):
            windows.append((at - 2, at + 2))

    def shown(at: float) -> bool:
        return any(first <= at <= last for first, last in windows)

    lines = [(at, f"campaign: {text}") for at, text in timeline if shown(at)]
    daemon_pid: Any = "?"
    for event in events:
        if event.get("event") == "daemon_starting":
            daemon_pid = event.get("pid")
        at = _epoch(event.get("timestamp"))
        if at is None or not shown(at) or event.get("event") in _QUIET_EVENTS:
            continue
        details = " ".join(f"{k}={event[k]}" for k in _TRACE_KEYS if event.get(k) is not None)
        lines.append((at, f"daemon {daemon_pid}: {event.get('event')} {details}"))
    return [f"  {datetime.fromtimestamp(at, UTC):%H:%M:%S.%f} {text}" for at, text in sorted(lines)]


@dataclass(frozen=True)
class _Victim:
    pid: int
    start_time: int | None
    what: str


def _processes() -> list[tuple[int, list[str]]]:
    """(pid, argv) of every process whose command line can be read (zombies have none)."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path("/proc", entry.name, "cmdline").read_bytes()
        except OSError:
            continue  # gone, or not ours to read
        if raw:
            out.append((int(entry.name), raw.rstrip(b"\0").decode(errors="replace").split("\0")))
    return out


def live_shims(runs_dir: Path) -> list[_Victim]:
    """Run shims whose run directory lies under ``runs_dir``."""
    out = []
    for pid, argv in _processes():
        if "orchestrator.executors.shim" not in argv or "--run-dir" not in argv:
            continue
        run_dir = argv[argv.index("--run-dir") + 1] if argv[-1] != "--run-dir" else ""
        if Path(run_dir).parent == runs_dir:
            out.append(_Victim(pid, process_start_time(pid), f"shim {Path(run_dir).name}"))
    return sorted(out, key=lambda v: v.pid)


def live_children(script: Path) -> list[_Victim]:
    """Job children running ``script`` (each leads its own process group)."""
    out = []
    for pid, argv in _processes():
        # argv: python -I -S SCRIPT EFFECTS JOB ...; a shim's argv holds SCRIPT too, later.
        if len(argv) > 5 and argv[3] == str(script):
            out.append(_Victim(pid, process_start_time(pid), f"child of {argv[5]}"))
    return sorted(out, key=lambda v: v.pid)


def _kill(victim: _Victim, group: bool) -> bool:
    """SIGKILL the victim (its process group when ``group``) if it is still the same process."""
    if not is_same_process(victim.pid, victim.start_time):
        return False
    try:
        if group:
            if os.getpgid(victim.pid) != victim.pid:
                return False  # not a group leader: not the job's child as the shim starts it
            os.killpg(victim.pid, signal.SIGKILL)
        else:
            os.kill(victim.pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


class Campaign:
    """One crash campaign in ``root`` (jobs.d, state, the job script, the side-effect file)."""

    def __init__(
        self,
        root: Path,
        cycles: int,
        seed: int,
        min_gap_s: float = 0.1,
        max_gap_s: float = 1.2,
        max_down_s: float = 1.0,
        startup_kill_fraction: float = 0.5,
        max_startup_s: float = 0.15,
        targets: tuple[str, ...] = TARGETS,
        max_freeze_s: float = 3.0,
        settle_timeout_s: float = 30.0,
        plans: tuple[JobPlan, ...] = DEFAULT_JOBS,
        say: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self.root = root
        self.cycles = cycles
        self.seed = seed
        self.rng = random.Random(seed)
        self.min_gap_s = min_gap_s
        self.max_gap_s = max_gap_s
        self.max_down_s = max_down_s
        self.startup_kill_fraction = startup_kill_fraction
        self.max_startup_s = max_startup_s
        unknown = set(targets) - set(ALL_TARGETS)
        if unknown or not targets:
            raise ValueError(f"targets must be some of {', '.join(ALL_TARGETS)}; got {targets}")
        self.max_freeze_s = max_freeze_s
        self.targets = tuple(targets)
        self.settle_timeout_s = settle_timeout_s
        self.plans = plans
        self.say = say
        self.harness = DaemonHarness(root)
        self.script = root / "chaos_job.py"
        self.effects = root / "effects.log"
        self.runs_dir = self.harness.state_dir / "runs"
        self.db_path = self.harness.state_dir / "runs.sqlite"
        self.kills: Counter[str] = Counter()
        self.unexpected_exits: list[str] = []
        self.timeline: list[tuple[float, str]] = []  # (epoch seconds, what the campaign did)
        self.log_offset = 0  # where the current daemon's lines begin in the harness's log

    # -------------------------------------------------------------- set-up

    def _write_manifests(self, every_s: float | None = None) -> None:
        for plan in self.plans:
            text = plan.manifest(sys.executable, self.script, self.effects, self.seed, every_s)
            self.harness.write(f"{plan.name}.yaml", text)

    # -------------------------------------------------------------- cycles

    def _check_daemon(self) -> None:
        """A daemon that exited although nobody killed it is a finding; start another."""
        proc = self.harness.proc
        assert proc is not None
        if proc.poll() is not None:
            tail = self.harness.log_path.read_text()[-3000:].strip().splitlines()[-2:]
            self.unexpected_exits.append(f"daemon exited with {proc.returncode}: {tail}")
            self._note(f"the daemon exited with {proc.returncode} by itself; starting another")
            self._start_daemon()

    def _daemon_answers(self, timeout_s: float) -> bool:
        """Whether the current daemon process answers a ping on its control socket."""
        proc = self.harness.proc
        assert proc is not None
        try:
            reply = request(self.harness.state_dir / "control.sock", {"op": "ping"}, timeout_s)
        except OrchestratorError:
            return False
        return reply.get("pid") == proc.pid

    def _wait_until_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self._daemon_answers(1.0):
            self._check_daemon()
            if time.monotonic() > deadline:
                raise AssertionError(f"the daemon did not answer within {timeout_s:g} s")
            time.sleep(0.05)

    def _kill_daemon(self, when: str) -> None:
        """SIGKILL the daemon, leave it down a random short time, start another."""
        starting = not self._ready_logged()
        self.harness.kill9()
        self.kills["daemon"] += 1
        self.kills["daemon (before it answered)"] += starting
        down_s = self.rng.uniform(0.0, self.max_down_s)
        self._note(
            f"{when}: SIGKILL daemon{' (still starting)' if starting else ''}, down {down_s:.2f} s"
        )
        time.sleep(down_s)
        self._start_daemon()

    def _start_daemon(self) -> None:
        self.log_offset = (
            self.harness.log_path.stat().st_size if self.harness.log_path.exists() else 0
        )
        self.harness.start(wait=False)

    def _logged(self, needle: bytes) -> bool:
        """Whether the current daemon's log lines hold ``needle`` (read, never waited for)."""
        with open(self.harness.log_path, "rb") as log:
            log.seek(self.log_offset)
            return needle in log.read()

    def _ready_logged(self) -> bool:
        return self._logged(b'"daemon_ready"')

    def _wait_for_log(self, needle: bytes, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self._logged(needle) and time.monotonic() < deadline:
            self._check_daemon()
            time.sleep(0.005)

    def _note(self, text: str) -> None:
        self.timeline.append((time.time(), text))
        self.say(text)

    def _cycle(self, number: int) -> None:
        time.sleep(self.rng.uniform(self.min_gap_s, self.max_gap_s))
        self._check_daemon()
        target = self.rng.choice(self.targets)
        if target == "freeze":
            self._freeze(number)
            return
        if target == "daemon":
            self._kill_daemon(f"cycle {number}")
            # Now and then a second SIGKILL lands in the new daemon's start-up, in the moments
            # after it took the lease, when it adopts the runs left behind and catches up
            # missed fires (a kill at a uniformly random moment mostly hits Python's imports).
            if self.rng.random() < self.startup_kill_fraction:
                delay_s = self.rng.uniform(0.0, self.max_startup_s)
                self._wait_for_log(b'"daemon_starting"', 10)
                time.sleep(delay_s)
                self._kill_daemon(f"cycle {number}, again {delay_s:.3f} s after daemon_starting")
            self._wait_until_ready(30)
            return
        candidates = live_shims(self.runs_dir) if target == "shim" else live_children(self.script)
        # Drawn even when there is no candidate, so that a seed names one sequence of choices.
        pick = self.rng.random()
        if not candidates:
            self.kills[f"{target} (none alive)"] += 1
            self._note(f"cycle {number}: no live {target}")
            return
        victim = candidates[int(pick * len(candidates))]
        if _kill(victim, group=target == "child"):
            self.kills[target] += 1
            self._note(f"cycle {number}: SIGKILL {victim.what} (pid {victim.pid})")
        else:
            self.kills[f"{target} (none alive)"] += 1
            self._note(f"cycle {number}: {victim.what} ended before the kill")

    def _freeze(self, number: int) -> None:
        proc = self.harness.proc
        assert proc is not None
        frozen_s = self.rng.uniform(0.0, self.max_freeze_s)
        self._note(f"cycle {number}: SIGSTOP daemon for {frozen_s:.2f} s")
        proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(frozen_s)
        finally:
            proc.send_signal(signal.SIGCONT)
        self.kills["freeze"] += 1

    # -------------------------------------------------------------- settle, stop

    def _active_and_retries(self) -> tuple[list[str], int]:
        conn = sqlite3.connect(str(self.db_path), timeout=10)
        try:
            active = [
                r[0]
                for r in conn.execute(
                    "SELECT run_id FROM runs WHERE state IN ('pending', 'running')"
                ).fetchall()
            ]
        finally:
            conn.close()
        retries = read_job_state(self.db_path, "retry")
        pending = sum(len(v) if isinstance(v, list) else 1 for v in retries.values() if v)
        return active, pending

    def _settle(self) -> list[str]:
        """Wait until no run is active and no retry pending (for 1.5 s in a row); return the
        runs still active when the deadline passed."""
        deadline = time.monotonic() + self.settle_timeout_s
        quiet_since: float | None = None
        while True:
            active, pending_retries = self._active_and_retries()
            now = time.monotonic()
            if active or pending_retries:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= 1.5:
                return []
            if now > deadline:
                return active
            time.sleep(0.2)

    def _rescheduled_at(self, since: float) -> dict[str, float]:
        """When the daemon logged each job rescheduled (after ``since``, epoch seconds)."""
        out: dict[str, float] = {}
        for event in self.harness.events():
            at = _epoch(event.get("timestamp"))
            if event.get("event") == "job_scheduled" and at is not None and at >= since:
                out.setdefault(str(event.get("job")), at)
        return out

    def run(self) -> CampaignResult:
        """Run the cycles, settle, stop cleanly and audit."""
        t0 = time.monotonic()
        self.script.write_text(JOB_SCRIPT)
        self._write_manifests()
        self._start_daemon()
        try:
            for number in range(1, self.cycles + 1):
                self._cycle(number)
            self._check_daemon()
            self._wait_until_ready(30)
            anchors = {
                job: datetime.fromisoformat(value).timestamp()
                for job, value in read_job_state(self.db_path, "anchor").items()
                if value
            }
            rewritten = time.time()
            self._write_manifests(every_s=QUIET_EVERY_S)
            names = {p.name for p in self.plans}
            deadline = time.monotonic() + 10
            while not names <= set(self._rescheduled_at(rewritten)):
                if time.monotonic() > deadline:
                    raise AssertionError("the daemon did not reschedule both jobs")
                time.sleep(0.1)
            grid_ends = self._rescheduled_at(rewritten)
            stuck = self._settle()
            stop_code: int | None = self.harness.stop(signal.SIGTERM, timeout=60)
        finally:
            proc = self.harness.proc
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
        time.sleep(0.3)
        orphans = []
        for victim in live_shims(self.runs_dir) + live_children(self.script):
            orphans.append(f"{victim.what} (pid {victim.pid}) alive after the clean stop")
            _kill(victim, group=False)
        runs = read_runs(self.db_path)
        events = self.harness.events()
        stored = [
            (str(item["retry_of"]), int(item["attempt"]))
            for value in read_job_state(self.db_path, "retry").values()
            for item in ([value] if isinstance(value, dict) else value or [])
        ]
        result = audit(
            self.plans,
            runs,
            read_effects(self.effects),
            read_skips(events),
            anchors,
            grid_ends,
            stuck,
            stored,
            read_retry_dues(events),
        )
        return CampaignResult(
            seed=self.seed,
            cycles=self.cycles,
            kills=self.kills,
            daemon_starts=self.harness.starts,
            unexpected_exits=self.unexpected_exits,
            orphans=orphans,
            stop_exit_code=stop_code,
            runs_recorded=len(runs),
            states=Counter(r.state for r in runs),
            audit=result,
            wall_s=time.monotonic() - t0,
            root=self.root,
            events=events,
            timeline=self.timeline,
        )


def run_campaign(root: Path, cycles: int, seed: int, **options: Any) -> CampaignResult:
    """Run one campaign in ``root`` (an empty directory) and return its figures."""
    return Campaign(root, cycles, seed, **options).run()


def stop_leftovers(root: Path) -> None:
    """Kill whatever a failed campaign in ``root`` left running (shims, children, daemon)."""
    for victim in live_shims(root / "state" / "runs") + live_children(root / "chaos_job.py"):
        _kill(victim, group=False)
