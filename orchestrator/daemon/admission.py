"""Whether a run may start now: a pure function of the job's policy, its active runs and what
it requires. No store, no clock, no threads: unit-tested in milliseconds.

``requires:`` is a generic contract: any job's run may publish in its result until when what
it made stays usable (``valid_until``, an ISO 8601 time; UTC when it has no zone). A job that
requires it starts only if that lasts past its own run (``policy.timeout``) plus
:data:`VALID_MARGIN_S`; otherwise it waits and the required job is run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from orchestrator.store.base import RunRecord, Trigger

# Grid clients treat a token with less than 600 s left as invalid (JAliEn; notes/hpc.md): the
# margin every required validity must keep past the end of the run.
VALID_MARGIN_S = 600.0
RESULT_KEY = "valid_until"


@dataclass(frozen=True)
class Start:
    """Start the run; ``replace`` are the job's active runs to cancel first."""

    replace: tuple[RunRecord, ...] = ()


@dataclass(frozen=True)
class Skip:
    """Do not start it. ``event`` is the log event, ``detail`` its fields, ``message`` what a
    person who asked for the run (``trigger``) is told."""

    event: str
    message: str
    detail: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True)
class Defer:
    """Wait for ``required_job`` (run it if it is not running); start once it succeeded."""

    required_job: str
    reason: str


Decision = Start | Skip | Defer


@dataclass(frozen=True)
class Unmet:
    """A required job whose product would not outlast the run, and why."""

    job: str
    reason: str


def valid_until(history: Iterable[RunRecord]) -> datetime | str | None:
    """When the newest published ``valid_until`` of these runs (newest first) ends; the text
    itself when it cannot be read; None when no run published one."""
    for run in history:
        value = (run.result or {}).get(RESULT_KEY)
        if not value:
            continue
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            return str(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def first_unmet(
    requires: Sequence[str],
    valid: dict[str, datetime | None],
    now: datetime,
    timeout_s: float,
) -> Unmet | None:
    """The first required job (of those known: ``valid`` has them) whose ``valid_until`` ends
    before the run could (``now + timeout_s + VALID_MARGIN_S``)."""
    needed = now + timedelta(seconds=timeout_s + VALID_MARGIN_S)
    for job in requires:
        if job not in valid:
            continue
        until = valid[job]
        if until is None:
            return Unmet(job, "no validity known yet")
        if until < needed:
            return Unmet(job, f"valid until {until.isoformat()}, before the run could end")
    return None


def admit(
    *,
    job: str,
    trigger: Trigger,
    concurrency: str,
    max_active: tuple[int, str] | None,
    active: Sequence[RunRecord],
    unmet: Unmet | None,
    after_required: bool = False,
) -> Decision:
    """Start, skip (with the reason) or defer one run of ``job``.

    ``active``: the job's runs that are active; ``max_active``: the executor's limit on them
    and the setting that sets it; ``unmet``: from :func:`first_unmet`; ``after_required``: this
    run is the one that waited for its required job, which has just run (if that is still
    not enough, e.g. renewal needs a passphrase, the run is skipped, not deferred in a loop)."""
    if unmet is not None and after_required:
        return Skip(
            "run_blocked_by_required_job",
            f"job {job!r} stays blocked by {unmet.job!r}: {unmet.reason}",
            (("required_job", unmet.job), ("reason", unmet.reason)),
        )
    if unmet is not None:
        return Defer(unmet.job, unmet.reason)
    if active and concurrency == "forbid":
        return Skip(
            "run_skipped_concurrency",
            f"job {job!r} already has run {active[0].run_id} active (policy.concurrency: forbid)",
            (("active_run", active[0].run_id), ("policy", "forbid")),
        )
    if max_active is not None and len(active) >= max_active[0]:
        limit, setting = max_active
        return Skip(
            "run_skipped_max_active",
            f"job {job!r} has {len(active)} runs queued or running ({setting}: {limit})",
            (("limit", limit), ("setting", setting)),
        )
    if active and concurrency == "replace":
        return Start(replace=tuple(active))
    return Start()


__all__ = [
    "RESULT_KEY",
    "VALID_MARGIN_S",
    "Decision",
    "Defer",
    "Skip",
    "Start",
    "Unmet",
    "admit",
    "first_unmet",
    "valid_until",
]
