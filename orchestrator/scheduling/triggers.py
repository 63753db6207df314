"""Fire times of schedules, as pure functions of a clock (testable without sleeping)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from orchestrator.manifests.models import ChangeSchedule, CronSchedule, EverySchedule

AnySchedule = CronSchedule | EverySchedule | ChangeSchedule


def check_cron(expr: str) -> str:
    """Validate a five-field cron expression; raise ValueError saying what is valid."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            f"cron {expr!r} has {len(fields)} fields; it needs five: "
            "minute hour day-of-month month day-of-week (e.g. '30 3 * * *')"
        )
    try:
        CronTrigger.from_crontab(expr, timezone="UTC")
    except ValueError as exc:
        raise ValueError(f"cron {expr!r} is not valid: {exc}") from exc
    return expr


def make_trigger(schedule: CronSchedule | EverySchedule, start: datetime | None = None) -> object:
    """The APScheduler trigger for a schedule, jitter included (APScheduler applies it)."""
    jitter = int(schedule.jitter) if schedule.jitter else None
    if isinstance(schedule, CronSchedule):
        return CronTrigger(
            **_cron_fields(schedule.cron), timezone=ZoneInfo(schedule.timezone), jitter=jitter
        )
    return IntervalTrigger(seconds=schedule.every, start_date=start, timezone=UTC, jitter=jitter)


def _cron_fields(expr: str) -> dict[str, str]:
    minute, hour, day, month, day_of_week = expr.split()
    return {
        "minute": minute,
        "hour": hour,
        "day": day,
        "month": month,
        "day_of_week": day_of_week,
    }


def next_fire_times(
    schedule: CronSchedule | EverySchedule, after: datetime, count: int, start: datetime | None = None
) -> list[datetime]:
    """The next ``count`` fire instants strictly after ``after`` (without jitter), in UTC.

    ``start`` anchors an ``every`` schedule (its first fire is ``start + every``... counted the
    way APScheduler counts: start, start+every, ...).
    """
    trigger = _plain_trigger(schedule, start or after)
    out: list[datetime] = []
    previous: datetime | None = None
    now = after
    while len(out) < count:
        fire = trigger.get_next_fire_time(previous, now)  # type: ignore[attr-defined]
        if fire is None:
            break
        if fire <= after:
            previous, now = fire, fire + timedelta(microseconds=1)
            continue
        out.append(fire.astimezone(UTC))
        previous, now = fire, fire + timedelta(microseconds=1)
    return out


def fire_times_between(
    schedule: CronSchedule | EverySchedule,
    since: datetime,
    until: datetime,
    start: datetime | None = None,
    limit: int = 1000,
) -> list[datetime]:
    """Fire instants in ``(since, until]``, oldest first, at most ``limit`` (the newest kept)."""
    trigger = _plain_trigger(schedule, start or since)
    out: list[datetime] = []
    previous: datetime | None = None
    now = since + timedelta(microseconds=1)
    while True:
        fire = trigger.get_next_fire_time(previous, now)  # type: ignore[attr-defined]
        if fire is None or fire > until:
            break
        if fire > since:
            out.append(fire.astimezone(UTC))
            if len(out) > limit:
                out.pop(0)
        previous, now = fire, fire + timedelta(microseconds=1)
    return out


def _plain_trigger(schedule: CronSchedule | EverySchedule, start: datetime) -> object:
    if isinstance(schedule, CronSchedule):
        return CronTrigger(**_cron_fields(schedule.cron), timezone=ZoneInfo(schedule.timezone))
    return IntervalTrigger(seconds=schedule.every, start_date=start, timezone=UTC)
