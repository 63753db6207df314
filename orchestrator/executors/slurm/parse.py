"""Slurm's words -> the orchestrator's: job states, exit codes, error messages.

All mapping of Slurm states lives in ``STATE_TABLE`` (see /shared/notes/slurm.md for how each
appears on these machines). Text interfaces only: ``squeue --json``/``sacct --json`` in Slurm
22.05 ignore filters, exit 0 on errors and misreport exit codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from orchestrator.store.base import RunState


class Action(StrEnum):
    ACTIVE = "active"  # still queued or running: keep tracking
    FINAL = "final"  # ended: record the mapped RunState
    RESUBMIT = "resubmit"  # the node failed the job: submit again (bounded)


# Slurm job state -> (what to do, the orchestrator state it means).
STATE_TABLE: dict[str, tuple[Action, RunState]] = {
    "PENDING": (Action.ACTIVE, RunState.PENDING),
    "CONFIGURING": (Action.ACTIVE, RunState.PENDING),
    "REQUEUED": (Action.ACTIVE, RunState.PENDING),
    "REQUEUE_FED": (Action.ACTIVE, RunState.PENDING),
    "REQUEUE_HOLD": (Action.ACTIVE, RunState.PENDING),
    "RESV_DEL_HOLD": (Action.ACTIVE, RunState.PENDING),
    "PREEMPTED": (Action.ACTIVE, RunState.PENDING),
    "RUNNING": (Action.ACTIVE, RunState.RUNNING),
    "COMPLETING": (Action.ACTIVE, RunState.RUNNING),
    "SUSPENDED": (Action.ACTIVE, RunState.RUNNING),
    "STOPPED": (Action.ACTIVE, RunState.RUNNING),
    "SIGNALING": (Action.ACTIVE, RunState.RUNNING),
    "STAGE_OUT": (Action.ACTIVE, RunState.RUNNING),
    "RESIZING": (Action.ACTIVE, RunState.RUNNING),
    "COMPLETED": (Action.FINAL, RunState.SUCCEEDED),
    "FAILED": (Action.FINAL, RunState.FAILED),
    "OUT_OF_MEMORY": (Action.FINAL, RunState.FAILED),
    "SPECIAL_EXIT": (Action.FINAL, RunState.FAILED),
    "CANCELLED": (Action.FINAL, RunState.CANCELLED),
    "REVOKED": (Action.FINAL, RunState.CANCELLED),
    "TIMEOUT": (Action.FINAL, RunState.TIMED_OUT),
    "DEADLINE": (Action.FINAL, RunState.TIMED_OUT),
    "NODE_FAIL": (Action.RESUBMIT, RunState.FAILED),
    "BOOT_FAIL": (Action.RESUBMIT, RunState.FAILED),
}


def classify_state(raw: str) -> tuple[Action, RunState]:
    """Map a state as squeue/sacct print it (``CANCELLED by 0`` included). An unknown state
    is treated as still active: a new Slurm state must never end a run by accident."""
    word = raw.strip().split(" ", 1)[0].rstrip("+").upper()
    return STATE_TABLE.get(word, (Action.ACTIVE, RunState.RUNNING))


@dataclass(frozen=True)
class JobRow:
    """One job, or one array task, as a status query reports it."""

    job_id: str  # "123" or "123_4"
    base_id: str  # "123" (the array's job id for a task)
    task: str | None  # "4", or None for a plain job
    name: str
    state: str
    exit_code: int | None = None
    reason: str = ""
    # sacct only: False while the accounting record has no end time yet. slurmctld's "job
    # start" record carries the job's state at the time it is sent, so a job that ended before
    # it was sent shows e.g. ``FAILED|0:0`` with End=Unknown until the "job complete" record
    # (with the real exit code) arrives; seen on the test cluster right after start-up.
    complete: bool = True


SQUEUE_FORMAT = "%i|%F|%K|%j|%T|%r"


def parse_squeue(text: str) -> list[JobRow]:
    """Lines of ``squeue -h -r -o '%i|%F|%K|%j|%T|%r'``."""
    rows = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 5:
            continue
        job_id, base, task, name, state = parts[:5]
        reason = parts[5] if len(parts) > 5 else ""
        task_or_none = task if task not in ("", "N/A") and not task.startswith("[") else None
        rows.append(
            JobRow(job_id, base or job_id.split("_")[0], task_or_none, name, state, None, reason)
        )
    return rows


SACCT_FORMAT = "JobIDRaw,JobID,JobName,State,ExitCode,End"


def parse_sacct(text: str) -> list[JobRow]:
    """Lines of ``sacct -X -n -P --format=JobIDRaw,JobID,JobName,State,ExitCode,End`` (End may
    be left out; a row whose End is ``Unknown`` is not ``complete``).

    ``JobID`` is ``123_4`` for an array task (``JobIDRaw`` is that task's own id); a pending
    array's placeholder ``123_[5-9%2]`` is skipped (its tasks are not yet real jobs).
    """
    rows = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 5:
            continue
        _raw, job_id, name, state, exit_code = parts[:5]
        if "[" in job_id or "." in job_id:
            continue  # a pending array's placeholder, or a step (with usage, no -X)
        base, _, task = job_id.partition("_")
        complete = len(parts) < 6 or parts[5].strip() not in ("Unknown", "None", "")
        rows.append(
            JobRow(
                job_id,
                base,
                task or None,
                name,
                state,
                parse_exit_code(exit_code),
                complete=complete,
            )
        )
    return rows


def parse_exit_code(text: str) -> int | None:
    """sacct's ``3:0`` (exit code 3) or ``0:9`` (killed by signal 9 -> -9)."""
    code, _, sig = text.strip().partition(":")
    try:
        code_i = int(code)
        sig_i = int(sig or 0)
    except ValueError:
        return None
    return -sig_i if sig_i and not code_i else code_i


# ---------------------------------------------------------------- errors

PERMANENT_PATTERNS = (
    "invalid account",
    "invalid partition",
    "invalid qos",
    "requested node configuration is not available",
    "invalid job array specification",
    "invalid generic resource",
    "invalid feature specification",
    "job violates accounting/qos policy",
    "memory specification can not be satisfied",
    "requested time limit is invalid",
    "invalid partition or qos",
    "invalid user id",
    "unrecognized option",
    "invalid option",
    "no partition specified or system default partition",
    "more processors requested than permitted",
)
TRANSIENT_PATTERNS = (
    "socket timed out",
    "unable to contact slurm controller",
    "connection refused",
    "connect failure",
    "slurm temporarily unable to accept job",
    "resource temporarily unavailable",
    "munge",
    "protocol authentication error",
    "zero bytes were transmitted",
    "communication connection failure",
    "slurmctld not responding",
    "timed out",
)


def is_permanent_error(message: str) -> bool:
    text = message.lower()
    return any(p in text for p in PERMANENT_PATTERNS) and not is_transient_error(message)


def is_transient_error(message: str) -> bool:
    text = message.lower()
    return any(p in text for p in TRANSIENT_PATTERNS)


def accounting_disabled(message: str) -> bool:
    return "accounting storage is disabled" in message.lower()
