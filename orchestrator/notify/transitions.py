"""Which messages a job's new state calls for: one per transition, never one per run.

A job's *problems* are a set: ``failure`` or ``alert`` (from its latest judged run: a task result
with ``alert: true`` is an alert whatever the exit code; a failed, timed-out or lost run is a
failure) and ``overdue`` (``expect.success_within`` passed). A problem that appears sends its
message; the set becoming empty sends one ``recovery``. A job failing every night therefore
sends one failure and, when it is fixed, one recovery.

A run that ended in a state that says nothing about the job (cancelled by a person,
interrupted by a stopping daemon, skipped, missed) is not judged, nor is a failed run whose
retry is still to come: the retry's outcome is the job's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from orchestrator.store.base import RunRecord, RunState

RUN_PROBLEMS = ("failure", "alert")
FAILED_STATES = frozenset({RunState.FAILED, RunState.TIMED_OUT, RunState.LOST})
JUDGED_STATES = FAILED_STATES | {RunState.SUCCEEDED}


@dataclass(frozen=True)
class Seen:
    """What was last announced for a job (kept in the run store across restarts)."""

    problems: frozenset[str] = frozenset()
    run_id: str | None = None  # the run the run-derived problem came from

    def to_json(self) -> dict[str, object]:
        return {"problems": sorted(self.problems), "run_id": self.run_id}

    @classmethod
    def from_json(cls, data: object) -> Seen:
        if not isinstance(data, dict):
            return cls()
        problems = data.get("problems")
        run_id = data.get("run_id")
        return cls(
            frozenset(p for p in problems if isinstance(p, str))
            if isinstance(problems, list)
            else frozenset(),
            run_id if isinstance(run_id, str) else None,
        )


def latest_judged(runs: Iterable[RunRecord]) -> RunRecord | None:
    """The newest run (``runs`` newest first) whose state says something about the job."""
    return next((r for r in runs if r.state in JUDGED_STATES and r.finished_at), None)


def verdict(run: RunRecord | None, retry_pending: bool) -> str | None:
    """``failure``, ``alert``, ``ok``, or None when the run decides nothing (yet)."""
    if run is None or retry_pending:
        return None
    if (run.result or {}).get("alert") is True:
        return "alert"
    return "failure" if run.state in FAILED_STATES else "ok"


def step(
    seen: Seen, judged: RunRecord | None, run_verdict: str | None, overdue: bool
) -> tuple[Seen, list[str]]:
    """The new :class:`Seen` and the messages due, in the order problems are listed."""
    problems = set(seen.problems)
    run_id = seen.run_id
    if run_verdict is not None and judged is not None:
        problems -= set(RUN_PROBLEMS)
        if run_verdict in RUN_PROBLEMS:
            problems.add(run_verdict)
        run_id = judged.run_id
    if overdue:
        problems.add("overdue")
    else:
        problems.discard("overdue")
    new = Seen(frozenset(problems), run_id)
    events = [p for p in (*RUN_PROBLEMS, "overdue") if p in new.problems - seen.problems]
    if seen.problems and not new.problems:
        events.append("recovery")
    return new, events
