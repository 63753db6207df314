"""Cron expressions as crontab(5) reads them (orchestrator/scheduling/cron.py).

Weekday numbers, the day rule and the messages are checked against the calendar; the fire-time
walk is checked against APScheduler's CronTrigger as an oracle on expressions where the two
dialects agree (no day of week, or one written by name with a free day of month).
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from orchestrator.manifests.models import CronSchedule
from orchestrator.scheduling import cron
from orchestrator.scheduling.triggers import fire_times_between, next_fire_times

SUNDAY = datetime(2026, 11, 29, tzinfo=UTC)  # a Sunday, 00:00 UTC


def fire_days(expr: str, count: int = 10) -> list[str]:
    fires = next_fire_times(CronSchedule(cron=expr), SUNDAY - timedelta(seconds=1), count)
    return [f.strftime("%a %d") for f in fires]


def test_weekdays_are_numbered_as_crontab_numbers_them() -> None:
    """1-5 is Monday to Friday and 0 and 7 are Sunday, as in crontab(5) and scrontab; names
    and ranges of names mean the same (APScheduler 3 numbered from Monday: 1-5 fired Tuesday
    to Saturday)."""
    assert fire_days("0 3 * * 1-5", 5) == ["Mon 30", "Tue 01", "Wed 02", "Thu 03", "Fri 04"]
    assert fire_days("0 3 * * mon-fri", 5) == fire_days("0 3 * * 1-5", 5)
    assert fire_days("0 3 * * 0", 2) == ["Sun 29", "Sun 06"]
    assert fire_days("0 3 * * 7", 2) == fire_days("0 3 * * SUN", 2) == ["Sun 29", "Sun 06"]
    assert fire_days("0 3 * * 5-7", 3) == ["Sun 29", "Fri 04", "Sat 05"]


def test_two_restricted_day_fields_match_either_one_a_star_field_matches_both() -> None:
    """'0 0 13 * 5' fires on the 13th and on every Friday (Vixie cron's rule); with a field that
    starts with '*' both must match ('*/2' days that are Mondays)."""
    days = fire_days("0 0 13 * 5", 6)
    assert days == ["Fri 04", "Fri 11", "Sun 13", "Fri 18", "Fri 25", "Fri 01"]
    fires = next_fire_times(CronSchedule(cron="0 0 */2 * 1"), SUNDAY, 4)
    assert all(f.weekday() == 0 and f.day % 2 == 1 for f in fires)
    # 31 February never comes, but the Fridays of February do: not "never fires"
    assert cron.parse("0 0 31 2 5").day_matches(date(2027, 2, 5))


@pytest.mark.parametrize(
    ("macro", "expanded"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@ANNUALLY", "0 0 1 1 *"),
    ],
)
def test_macros_fire_as_their_expansion(macro: str, expanded: str) -> None:
    """Each macro is accepted, kept as written, and fires where its five fields fire."""
    schedule = CronSchedule(cron=macro, timezone="Europe/Zurich")
    assert schedule.cron == macro
    twin = CronSchedule(cron=expanded, timezone="Europe/Zurich")
    assert next_fire_times(schedule, SUNDAY, 5) == next_fire_times(twin, SUNDAY, 5)


def test_every_bad_field_is_reported_at_once() -> None:
    """One message names each bad field, its text and what is allowed, not only the last."""
    with pytest.raises(ValidationError) as info:
        CronSchedule(cron="61 3 * 13 mon-fry")
    text = str(info.value)
    assert "minute '61': 61 is outside 0-59" in text
    assert "month '13': 13 is outside 1-12" in text
    assert "day-of-week 'mon-fry': 'fry' is not a number 0-7 or a name (sun..sat)" in text
    assert "hour" not in text.split("is not valid:")[1]


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("@reboot", "not a schedule"),
        ("@fortnightly", "not a known macro; use one of @yearly"),
        ("0 3 * *", "has 4 fields; it needs five"),
        ("0 0 3 * * *", "has 6 fields"),
        ("0 5-1 * * *", "hour '5-1': the range '5-1' runs backwards"),
        ("*/0 * * * *", "minute '*/0': the step in '*/0' must be a whole number from 1"),
        ("1,,2 * * * *", "minute '1,,2': an empty item"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 L * *", "day-of-month 'L': 'L' is not a number 1-31"),
    ],
)
def test_bad_expressions_say_what_is_wrong(expr: str, message: str) -> None:
    """Each malformed expression is refused with a message that fits what was written."""
    with pytest.raises(cron.CronError, match=re.escape(message)):
        cron.parse(expr)


def test_steps_from_a_start_run_to_the_end_of_the_field() -> None:
    """'5/20' is 5, 25, 45 (from 5 to the field's end, as cronie reads it); lists mix forms."""
    assert cron.parse("5/20 * * * *").minutes == (5, 25, 45)
    assert cron.parse("0,10-12,50-59/5 * * * *").minutes == (0, 10, 11, 12, 50, 55)


def test_validating_a_cron_manifest_does_not_import_apscheduler(tmp_path: Path) -> None:
    """The manifest models validate a cron schedule (with jitter, whose check walks the fire
    times) with the pure cron module: a login node's `validate` loads no scheduler."""
    manifest = tmp_path / "nightly.yaml"
    manifest.write_text(
        "apiVersion: orchestrator/v1\nkind: Command\nname: nightly\n"
        "schedule: {cron: '30 3 * * 1-5', timezone: Europe/Zurich, jitter: 10m}\n"
        "spec: {command: [/bin/true]}\n"
    )
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from orchestrator.manifests.loader import load_manifest\n"
        f"m = load_manifest(Path({str(manifest)!r})).manifest\n"
        "assert m.schedule.cron == '30 3 * * 1-5', m\n"
        "print(sorted(k for k in sys.modules if k.split('.')[0] == 'apscheduler'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# --------------------------------------------------------------------------- reference walk

NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _item(lo: int, hi: int) -> st.SearchStrategy[str]:
    num = st.integers(lo, hi)
    rng = st.tuples(num, num).map(lambda ab: f"{min(ab)}-{max(ab)}")
    step = st.integers(1, max(1, (hi - lo) // 2))
    return st.one_of(
        num.map(str),
        rng,
        step.map(lambda s: f"*/{s}"),
        st.tuples(rng, step).map(lambda rs: f"{rs[0]}/{rs[1]}"),
    )


def _field(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.one_of(st.just("*"), st.lists(_item(lo, hi), min_size=1, max_size=3).map(",".join))


weekdays = st.one_of(
    st.just("*"),
    _field(0, 7),
    st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True).map(",".join),
)


@st.composite
def expressions(draw: st.DrawFn) -> str:
    fields = [draw(_field(0, 59)), draw(_field(0, 23)), draw(_field(1, 31)), draw(_field(1, 12))]
    expr = " ".join([*fields, draw(weekdays)])
    try:
        cron.parse(expr)
    except cron.CronError:
        assume(False)  # never fires (31 February): refused, tested above
    return expr


def _reference(expr: str, zone: ZoneInfo, after: datetime, count: int) -> list[datetime]:
    """Fire instants by a plain walk over local days, each wall time placed by the zone's
    offsets around it: the instants whose wall clock shows it, or, for a time the clocks skip,
    the one past the gap (the offset from before it)."""
    c = cron.parse(expr)
    out: set[datetime] = set()
    day = after.astimezone(zone).date() - timedelta(days=1)
    for _ in range(9 * 366):
        if len(out) >= count and day > max(sorted(out)[:count]).astimezone(zone).date() + (
            timedelta(days=1)
        ):
            break
        if c.day_matches(day):
            for hour, minute in itertools.product(c.hours, c.minutes):
                wall = datetime(day.year, day.month, day.day, hour, minute)
                offsets = {(wall + d).replace(tzinfo=zone).utcoffset() for d in (-DAY, DAY)}
                shown = [
                    (wall - o).replace(tzinfo=UTC)
                    for o in offsets
                    if o is not None
                    and (wall - o).replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None) == wall
                ]
                if not shown:  # skipped by the clocks: the offset from before the gap
                    before = (wall - DAY).replace(tzinfo=zone).utcoffset()
                    assert before is not None
                    shown = [(wall - before).replace(tzinfo=UTC)]
                out.update(t for t in shown if t > after)
        day += DAY
    return sorted(out)[:count]


DAY = timedelta(days=1)


@settings(deadline=None, max_examples=150)
@given(
    expr=expressions(),
    after=st.datetimes(
        min_value=datetime(2025, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
    ),
    tz_name=st.sampled_from(
        ["UTC", "Europe/Zurich", "America/New_York", "Australia/Lord_Howe", "America/Santiago"]
    ),
)
def test_fire_times_agree_with_a_plain_walk_over_the_calendar(
    expr: str, after: datetime, tz_name: str
) -> None:
    """For any valid expression, time zone and instant, the next fires are those of a plain
    walk over the calendar, daylight saving included, and the window walk returns the same
    instants. (APScheduler 3's CronTrigger, tried as this oracle first, is wrong at such
    boundaries: '* 0 1 * *' in Europe/Zurich from 1 March 2025 skipped 1 April for 1 May, and
    Australia/Lord_Howe's half-hour offset put 1 January's midnight at 13:30 UTC, not 13:00.)"""
    zone = ZoneInfo(tz_name)
    got = next_fire_times(CronSchedule(cron=expr, timezone=tz_name), after, 8)
    assert got == _reference(expr, zone, after, 8)
    window = fire_times_between(CronSchedule(cron=expr, timezone=tz_name), after, got[-1])
    assert window == got


def test_apscheduler_runs_the_crontab_trigger_and_hands_over_missed_fires() -> None:
    """The real BackgroundScheduler takes the crontab trigger: asked to start from two
    minutes ago it hands over the missed minute fires at once, in order, then waits for the
    next whole minute."""
    import threading

    from orchestrator.scheduling.scheduler import Scheduler

    got: list[datetime] = []
    done = threading.Event()

    def on_fire(name: str, times: list[datetime]) -> None:
        assert name == "every-minute"
        got.extend(times)
        done.set()

    scheduler = Scheduler(on_fire)
    scheduler.start()
    try:
        now = datetime.now(UTC)
        since = now - timedelta(minutes=2)
        scheduler.schedule("every-minute", CronSchedule(cron="* * * * *"), after=since)
        assert done.wait(10)
        nxt = scheduler.next_fire_time("every-minute")
    finally:
        scheduler.shutdown()
    expected = fire_times_between(CronSchedule(cron="* * * * *"), since, now)
    assert got[: len(expected)] == expected
    assert len(expected) >= 2
    assert nxt is not None
    assert nxt > now
    assert (nxt.second, nxt.microsecond) == (0, 0)
    assert nxt - now <= timedelta(minutes=1)
