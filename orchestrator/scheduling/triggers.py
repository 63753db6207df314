"""Fire times of schedules, as pure functions of a clock (testable without sleeping), and the
APScheduler triggers the scheduler runs them with.

Cron expressions are read as crontab(5) reads them, on the wall clock of the schedule's time
zone, by :mod:`orchestrator.scheduling.cron` (its docstring has the rules, daylight saving
included); APScheduler only wakes the scheduler at the instants that module computes.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from orchestrator.durations import MAX_DURATION_S
from orchestrator.manifests.models import ChangeSchedule, CronSchedule, EverySchedule
from orchestrator.scheduling import cron

AnySchedule = CronSchedule | EverySchedule | ChangeSchedule


# Step past an instant in UTC: ``aware + timedelta`` is wall-clock arithmetic that drops
# ``fold``, so inside a DST fall-back hour it lands an hour early and the same fire comes back.
_STEP = timedelta(microseconds=1)


def make_trigger(schedule: CronSchedule | EverySchedule, start: datetime | None = None) -> object:
    """The APScheduler trigger for a schedule, jitter included (APScheduler applies it)."""
    jitter = int(schedule.jitter) if schedule.jitter else None
    if isinstance(schedule, CronSchedule):
        return CrontabTrigger(schedule.cron, schedule.timezone, jitter)
    if jitter:
        return _GridIntervalTrigger(
            seconds=schedule.every, start_date=start, timezone=UTC, jitter=jitter
        )
    return IntervalTrigger(seconds=schedule.every, start_date=start, timezone=UTC)


class CrontabTrigger(BaseTrigger):  # type: ignore[misc]  # APScheduler 3: untyped
    """An APScheduler trigger that fires where :mod:`orchestrator.scheduling.cron` says.

    Asked as APScheduler's own cron trigger is asked: the first fire at or after ``now``, or,
    after a previous fire, at or after the earlier of ``now`` and just past that fire (so that
    the scheduler sees the fires it missed and applies its misfire rules)."""

    __slots__ = ("cron", "jitter", "timezone")

    def __init__(self, expr: str, timezone: str, jitter: int | None = None) -> None:
        self.cron = cron.parse(expr)
        self.timezone = ZoneInfo(timezone)
        self.jitter = jitter

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        start = now.astimezone(UTC)
        if previous_fire_time is not None:
            start = min(start, previous_fire_time.astimezone(UTC) + _STEP)
        fires = cron.fires_after(self.cron, self.timezone, start - _STEP, 1)
        fire = fires[0] if fires else None
        jittered: datetime | None = self._apply_jitter(fire, self.jitter, now)
        return jittered

    def __str__(self) -> str:
        return f"cron[{self.cron.text!r}, {self.timezone.key}]"

    def __repr__(self) -> str:
        return f"<CrontabTrigger ({self.cron.text!r}, timezone={self.timezone.key!r})>"


class _GridIntervalTrigger(IntervalTrigger):  # type: ignore[misc]  # APScheduler 3: untyped
    """An interval trigger whose jitter does not accumulate.

    APScheduler 3 asks for the next fire time from the previous, jittered one and adds the
    interval to it, so every fire moves the whole schedule later by jitter/2 on average and
    the anchored phase is lost. Here the previous fire is first taken back to its grid point
    (unambiguous because the manifest's jitter is shorter than the interval).
    """

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        if previous_fire_time is not None:
            steps = math.floor((previous_fire_time - self.start_date) / self.interval)
            previous_fire_time = self.start_date + steps * self.interval
        fire: datetime | None = super().get_next_fire_time(previous_fire_time, now)
        return fire


def next_fire_times(
    schedule: CronSchedule | EverySchedule,
    after: datetime,
    count: int,
    start: datetime | None = None,
) -> list[datetime]:
    """The next ``count`` fire instants strictly after ``after`` (without jitter), in UTC.

    ``start`` anchors an ``every`` schedule (its first fire is ``start + every``... counted the
    way APScheduler counts: start, start+every, ...).
    """
    if isinstance(schedule, CronSchedule):
        return cron.fires_after(
            cron.parse(schedule.cron), ZoneInfo(schedule.timezone), after, count
        )
    trigger = _plain_trigger(schedule, start or after)
    out: list[datetime] = []
    instant = after
    while len(out) < count:
        fire = _first_fire_after(trigger, instant)
        if fire is None:
            break
        out.append(fire)
        instant = fire
    return out


def fire_times_between(
    schedule: CronSchedule | EverySchedule,
    since: datetime,
    until: datetime,
    start: datetime | None = None,
    limit: int = 1000,
) -> list[datetime]:
    """Fire instants in ``(since, until]``, oldest first, at most ``limit`` (the newest kept)."""
    if isinstance(schedule, EverySchedule):
        # Arithmetic, not a walk: a week of `every: 2s` down-time is 302,400 fires.
        anchor = (start or since).astimezone(UTC)
        step = timedelta(seconds=schedule.every)
        first_k = max(0, math.floor((since - anchor) / step) + 1)
        last_k = math.floor((until - anchor) / step)
        first_k = max(first_k, last_k - limit + 1)
        return [anchor + k * step for k in range(first_k, last_k + 1) if anchor + k * step > since]
    return cron.fires_between(
        cron.parse(schedule.cron), ZoneInfo(schedule.timezone), since, until, limit
    )


def _first_fire_after(trigger: object, instant: datetime) -> datetime | None:
    """The trigger's first fire strictly after ``instant``, in UTC, computed from that instant
    alone (no previous fire time, whose fold a caller could lose)."""
    instant = instant.astimezone(UTC)
    probe = instant + _STEP
    fire = trigger.get_next_fire_time(None, probe)  # type: ignore[attr-defined]
    while fire is not None and fire.astimezone(UTC) <= instant:
        # Not seen with APScheduler 3.11; a guard so that a regression cannot loop forever.
        probe += timedelta(seconds=1)
        fire = trigger.get_next_fire_time(None, probe)  # type: ignore[attr-defined]
    return fire.astimezone(UTC) if fire is not None else None


def _plain_trigger(schedule: EverySchedule, start: datetime) -> object:
    return IntervalTrigger(seconds=schedule.every, start_date=start, timezone=UTC)


def retry_delay_s(base_s: float, max_s: float, attempt: int) -> float:
    """Delay before the retry that follows failed attempt ``attempt`` (1-based): exponential
    from ``base_s``, doubling per attempt, capped at ``max_s`` and at ``MAX_DURATION_S``.

    Saturates instead of overflowing, for any attempt count: ``base * 2**(attempt-1)`` as an
    int converted to float raises OverflowError past 2**1024, and the caller adds the delay to
    a datetime, which overflows past the year 9999 (issue 8: a daemon crash-looped on it).
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    cap_s = min(max_s, MAX_DURATION_S) if max_s >= 0 else 0.0  # NaN compares False: 0
    if not base_s > 0:  # zero, negative or NaN: no wait (NaN would poison min())
        return 0.0
    # 2.0**1023 is the largest power of two a float holds; float * float saturates to inf,
    # which min() then caps.
    delay_s = base_s * 2.0 ** min(attempt - 1, 1023)
    return float(min(delay_s, cap_s))
