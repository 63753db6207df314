"""Cron expressions as crontab(5) reads them, and their fire instants in a time zone.

Pure Python, no APScheduler: validating a manifest needs only this module, and the fire-time
maths is a function of an instant that tests can call without a clock.

The expression is the one users know from crontab(5) and Slurm's scrontab(1), not APScheduler's
own dialect:

- five fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12 or jan-dec), day of
  week (0-7 or sun-sat; 0 and 7 are both Sunday). Each is ``*``, a number, a range ``a-b``, a
  step ``*/n``, ``a-b/n`` or ``a/n`` (from ``a`` to the field's end), or a comma list of these.
- macros: ``@hourly``, ``@daily`` (``@midnight``), ``@weekly``, ``@monthly``, ``@yearly``
  (``@annually``). ``@reboot`` is refused: it is not a schedule.
- the day rule of Vixie cron and cronie: when both day fields are restricted (neither starts
  with ``*``), a day matches when *either* matches ("0 0 13 * 5" fires on the 13th and on every
  Friday); otherwise both must.

APScheduler 3's ``CronTrigger`` numbers days of the week from Monday (0 = Monday), also in
``from_crontab``, so ``1-5`` meant Tuesday to Saturday and ``0`` Monday there, and it ANDs the
day fields: both are why this module exists beside it.

Wall-clock rules in a time zone with daylight saving (as APScheduler documents them, and as the
daemon has always fired): a local time that does not exist on the day clocks go forward fires
once, moved forward by the gap (02:30 in Europe/Zurich on 2026-03-29 fires at 03:30 CEST); a
local time that happens twice on the day clocks go back fires at each occurrence. Fire instants
are strictly increasing.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import lru_cache

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# name, lowest, highest, names (the first name's value is the lowest)
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _DAYS),
)
# A search window longer than any schedule's longest gap: 29 February on a given weekday comes
# back within 28 years, but with the day rule above a weekday alone matches weekly, and a
# day of month alone comes back within 8 years (29 February across 2100).
_HORIZON_DAYS = 9 * 366
# More than any change of a zone's UTC offset (two hours at most in the tz database since 1970),
# so that a scan which starts this far before an instant in wall time sees every fold.
_FOLD_MARGIN = timedelta(hours=3)


class CronError(ValueError):
    """An expression that is not valid; the message names every bad field."""


@dataclass(frozen=True)
class Cron:
    """A parsed expression: the sets of values each field allows."""

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday ... 6 = Saturday
    days_restricted: bool  # the day-of-month field does not start with '*'
    weekdays_restricted: bool

    def day_matches(self, day: date) -> bool:
        """Whether ``day`` is a fire day (month and the day rule)."""
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = day.isoweekday() % 7 in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return dom or dow
        return dom and dow

    def wall_times(self, start: datetime) -> Iterator[datetime]:
        """Matching wall-clock minutes (naive) at or after ``start``, in order, for the horizon."""
        if start.second or start.microsecond:
            start = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = start.date()
        last = day + timedelta(days=_HORIZON_DAYS)
        first = True
        while day <= last:
            if day.month not in self.months:  # jump to the next month's first day
                day = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
                first = False
                continue
            if self.day_matches(day):
                hours = self.hours
                if first:
                    hours = hours[bisect.bisect_left(hours, start.hour) :]
                for hour in hours:
                    minutes = self.minutes
                    if first and hour == start.hour:
                        minutes = minutes[bisect.bisect_left(minutes, start.minute) :]
                    for minute in minutes:
                        yield datetime(day.year, day.month, day.day, hour, minute)
            day += timedelta(days=1)
            first = False


def parse(text: str) -> Cron:
    """Parse an expression or a macro; :class:`CronError` names every bad field."""
    return _parse(text.strip())


@lru_cache(maxsize=1024)
def _parse(text: str) -> Cron:
    if text.startswith("@"):
        if text.lower() == "@reboot":
            raise CronError(
                "cron '@reboot' is not a schedule; a job that runs when the daemon starts is "
                "'schedule: {on: change}' (it runs once when its manifest is first read)"
            )
        if text.lower() not in MACROS:
            raise CronError(f"cron {text!r} is not a known macro; use one of {', '.join(MACROS)}")
        return _parse_fields(text, MACROS[text.lower()].split())
    fields = text.split()
    if len(fields) != 5:
        raise CronError(
            f"cron {text!r} has {len(fields)} fields; it needs five: minute hour day-of-month "
            "month day-of-week (e.g. '30 3 * * *'), or a macro such as '@daily'"
        )
    return _parse_fields(text, fields)


def _parse_fields(text: str, fields: list[str]) -> Cron:
    values: list[set[int]] = []
    problems: list[str] = []
    for field, (name, lo, hi, names) in zip(fields, _FIELDS, strict=True):
        try:
            values.append(_parse_field(field, lo, hi, names))
        except ValueError as exc:
            problems.append(f"{name} {field!r}: {exc}")
            values.append(set())
    if problems:
        raise CronError(f"cron {text!r} is not valid: " + "; ".join(problems))
    minutes, hours, days, months, weekdays = values
    cron = Cron(
        text=text,
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days=frozenset(days),
        months=frozenset(months),
        weekdays=frozenset(d % 7 for d in weekdays),
        days_restricted=not fields[2].startswith("*"),
        weekdays_restricted=not fields[4].startswith("*"),
    )
    if not _ever_fires(cron):
        raise CronError(
            f"cron {text!r} never fires: no date matches its day-of-month and month "
            "together (e.g. 31 February)"
        )
    return cron


def _parse_field(field: str, lo: int, hi: int, names: tuple[str, ...]) -> set[int]:
    out: set[int] = set()
    for item in field.split(","):
        if not item:
            raise ValueError("an empty item in a list (two commas, or one at an end)")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise ValueError(f"the step in {item!r} must be a whole number from 1")
            step = int(step_text)
        if base == "*":
            first, last = lo, hi
        elif "-" in base:
            a, _, b = base.partition("-")
            first, last = _value(a, lo, hi, names), _value(b, lo, hi, names)
            if first > last:
                raise ValueError(f"the range {base!r} runs backwards; write it low-high")
        else:
            first = _value(base, lo, hi, names)
            last = hi if slash else first
        out.update(range(first, last + 1, step))
    return out


def _value(token: str, lo: int, hi: int, names: tuple[str, ...]) -> int:
    if token.isdigit():
        value = int(token)
        if not lo <= value <= hi:
            raise ValueError(f"{value} is outside {lo}-{hi}")
        return value
    if names and token.lower() in names:
        return names.index(token.lower()) + lo
    hint = f" or a name ({names[0]}..{names[-1]})" if names else ""
    raise ValueError(f"{token!r} is not a number {lo}-{hi}{hint}")


def _ever_fires(cron: Cron) -> bool:
    if cron.days_restricted and cron.weekdays_restricted:
        return True  # any matching weekday comes every week
    longest = {2: 29, 4: 30, 6: 30, 9: 30, 11: 30}
    return any(d <= longest.get(m, 31) for m in cron.months for d in cron.days)


def check(text: str) -> str:
    """Validate ``text``; return it unchanged (the manifest keeps what its author wrote)."""
    parse(text)
    return text


def fires_after(cron: Cron, zone: tzinfo, after: datetime, count: int) -> list[datetime]:
    """The first ``count`` fire instants strictly after ``after``, in UTC, increasing."""
    after = after.astimezone(UTC)
    wall = after.astimezone(zone).replace(tzinfo=None)
    found: list[datetime] = []
    stop: datetime | None = None
    for local in cron.wall_times(wall - _FOLD_MARGIN):
        if stop is not None and local >= stop:
            break
        found.extend(t for t in instants(local, zone) if t > after)
        if stop is None and len(set(found)) >= count:
            stop = local + _FOLD_MARGIN  # later wall times can still be earlier instants
    return sorted(set(found))[:count]


def fires_between(
    cron: Cron, zone: tzinfo, since: datetime, until: datetime, limit: int
) -> list[datetime]:
    """Fire instants in ``(since, until]``, oldest first, the newest ``limit`` of them.

    The scan starts a day before ``until`` and reaches back, doubling, only as far as it must
    to find ``limit`` fires: a year of an every-minute schedule costs what a day does."""
    since, until = since.astimezone(UTC), until.astimezone(UTC)
    reach = timedelta(days=1)
    while True:
        start = max(since, until - reach)
        found = _between(cron, zone, start, until)
        if len(found) >= limit or start == since:
            return found[-limit:] if limit > 0 else []
        reach *= 2


def _between(cron: Cron, zone: tzinfo, since: datetime, until: datetime) -> list[datetime]:
    wall_since = since.astimezone(zone).replace(tzinfo=None) - _FOLD_MARGIN
    wall_until = until.astimezone(zone).replace(tzinfo=None) + _FOLD_MARGIN
    found: set[datetime] = set()
    for local in cron.wall_times(wall_since):
        if local > wall_until:
            break
        found.update(t for t in instants(local, zone) if since < t <= until)
    return sorted(found)


def instants(local: datetime, zone: tzinfo) -> tuple[datetime, ...]:
    """The UTC instants at which the wall clock of ``zone`` shows ``local``: one, two when the
    clocks go back over it, or (when it does not exist) the one moved forward by the gap."""
    first = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = local.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:
        return (first,)
    if first.astimezone(zone).replace(tzinfo=None) != local:  # in a gap: fold=0 is forward
        return (first,)
    return (first, second)
