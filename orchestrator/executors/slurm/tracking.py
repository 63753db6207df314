"""Where one batch job (or array task) stands, from what Slurm and the run directory say: a pure
function of the status rows, the accounting's availability, the script's exit file and how
long the task has been unseen. No threads, no clock, no calls: unit-tested on its own.

Rules (see ``/shared/notes/slurm.md``): sacct's completed row is authoritative; a task ended
in squeue waits for it while accounting works (sacct lags), and takes the exit file's code
where accounting is disabled; a task in neither is unknown, not finished, until it has been
unseen for the lost grace (then its exit file, if the script wrote one, else lost); a node or
boot failure is resubmitted while resubmissions are left.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from orchestrator.durations import format_duration
from orchestrator.executors.slurm.parse import Action, JobRow, classify_state
from orchestrator.store.base import RunState


class Phase(StrEnum):
    ACTIVE = "active"  # queued or running (``state`` says which)
    AWAITING_ACCOUNTING = "awaiting_accounting"  # ended in squeue; sacct's row not there yet
    UNKNOWN = "unknown"  # in neither squeue nor sacct, within the lost grace
    RESUBMIT = "resubmit"  # the node failed it: submit the run again
    ENDED = "ended"  # ``state``, ``exit_code`` and ``slurm_state`` are final


@dataclass(frozen=True)
class Tracked:
    phase: Phase
    state: RunState | None = None
    exit_code: int | None = None
    slurm_state: str | None = None


def _by_exit_code(code: int) -> RunState:
    return RunState.SUCCEEDED if code == 0 else RunState.FAILED


def track_task(
    final: JobRow | None,
    live: JobRow | None,
    accounting: bool | None,
    exit_file: Callable[[], int | None],
    unseen_s: float,
    lost_grace_s: float,
    can_resubmit: bool,
) -> Tracked:
    """Where one task stands. ``final``: its sacct row (None when sacct was not asked or has
    none); ``live``: its squeue row; ``accounting``: whether sacct works (None: not known
    yet); ``exit_file``: reads the code the batch script wrote (None without one); ``unseen_s``:
    how long it has been in neither query (0 the first time); ``can_resubmit``: a node or
    boot failure may be submitted again."""
    row = final if final is not None and final.complete else None  # an incomplete row: no end yet
    action, state = classify_state(row.state) if row else (None, None)
    exit_code = row.exit_code if row else None
    if (action is None or action == Action.ACTIVE) and live is not None:
        action, state = classify_state(live.state)
        exit_code = None
    if action == Action.FINAL and row is None:
        # Ended in squeue; without accounting the script's exit file has the code.
        if accounting is True:
            return Tracked(Phase.AWAITING_ACCOUNTING)
        exit_code = exit_file()
    if action is None:
        exit_code = exit_file()
        if exit_code is not None and accounting is not True:
            action, state = Action.FINAL, _by_exit_code(exit_code)
        elif unseen_s < lost_grace_s:
            return Tracked(Phase.UNKNOWN)
        elif exit_code is not None:
            # Accounting never recorded the end, but the script did: trust the exit code it
            # wrote rather than calling a finished job lost.
            action, state = Action.FINAL, _by_exit_code(exit_code)
        else:
            action, state = Action.FINAL, RunState.LOST
    if action == Action.ACTIVE:
        return Tracked(Phase.ACTIVE, state)
    if action == Action.RESUBMIT:
        if can_resubmit:
            return Tracked(Phase.RESUBMIT)
        state = RunState.FAILED
    slurm_state = row.state if row else live.state if live is not None else "LOST"
    return Tracked(Phase.ENDED, state, exit_code, slurm_state)


# --------------------------------------------------------------- the fallback of a stalled queue

# A partition in these states takes jobs but starts none: the fallback moves tasks at once.
UNAVAILABLE_REASONS = ("PartitionDown", "PartitionInactive")
# Waits that are not the queue's: a user's hold, a dependency, a begin time. Never moved.
NOT_QUEUE_WAITS = ("JobHeld", "Dependency", "BeginTime", "DependencyNeverSatisfied")
# The array's own throttle: such a task waits for its siblings, not for the queue.
THROTTLE_REASON = "JobArrayTaskLimit"


@dataclass(frozen=True)
class Move:
    tasks: list[str]
    reason: str


def fallback_due(
    pending: dict[str, JobRow], waited_s: float, after_s: float, when_unavailable: bool
) -> Move | None:
    """Whether a run's pending tasks (their squeue rows, still PENDING in the first-choice job)
    go to the fallback resources now, and which. ``waited_s``: how long since the run was
    submitted or one of its tasks last started.

    Rules (docs/slurm-fallback.md): a task waiting on its own terms (held, a dependency, a
    begin time) never moves; a partition down or inactive moves the others at once (with
    ``when_unavailable``); otherwise they move once no task started for ``after_s`` while at
    least one waits for the queue itself (Resources, Priority, a QOS limit, nodes down or
    drained: a reason that also shows briefly when another partition's job holds the nodes,
    so it waits for ``after_s`` too), not only for the array's throttle."""
    movable = {
        task: row
        for task, row in pending.items()
        if row.state.upper().startswith("PENDING") and not row.reason.startswith(NOT_QUEUE_WAITS)
    }
    if not movable:
        return None
    order = sorted(movable, key=lambda t: (len(t), t))  # numeric order of task ids
    down = sorted({r.reason for r in movable.values() if r.reason.startswith(UNAVAILABLE_REASONS)})
    if when_unavailable and down:
        return Move(order, f"the partition does not start jobs (Slurm: {', '.join(down)})")
    queued = sorted({r.reason or "None" for r in movable.values() if r.reason != THROTTLE_REASON})
    if queued and waited_s >= after_s:
        return Move(
            order,
            f"no task started for {format_duration(float(round(waited_s)))} (after: "
            f"{format_duration(after_s)}; Slurm: {', '.join(queued)})",
        )
    return None
