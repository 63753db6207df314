"""Fire times of cron and every schedules, computed from fixed instants (no clock, no sleeping).

Cron fields are read on the wall clock of the schedule's time zone (APScheduler's documented
"wall clock" behaviour): a local time skipped by spring-forward fires once, moved forward by the
gap; a local time repeated by fall-back fires at each of its two instants; every other day
fires at its local time. The expectations below come from the IANA rules via zoneinfo or from
a minute-by-minute scan of the wall clock, never from APScheduler.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.manifests.models import CronSchedule, EverySchedule
from orchestrator.scheduling.triggers import (
    fire_times_between,
    make_trigger,
    next_fire_times,
)

ZURICH = ZoneInfo("Europe/Zurich")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(tz: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=tz, fold=fold).astimezone(UTC)  # type: ignore[misc]


def wall_clock_matches(
    tz: ZoneInfo, minutes: set[int], hours: set[int], since: datetime, until: datetime
) -> list[datetime]:
    """Reference: every UTC minute in (since, until] whose local wall time matches the fields."""
    out = []
    t = since.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while t <= until:
        wall = t.astimezone(tz)
        if wall.minute in minutes and wall.hour in hours:
            out.append(t)
        t += timedelta(minutes=1)
    return out


# --------------------------------------------------------------------------- spring forward


def test_zurich_spring_forward_moves_the_missing_0230_by_the_gap() -> None:
    """On 2026-03-29 02:30 Zurich does not exist; it fires once at 03:30 CEST, then 02:30 again."""
    schedule = CronSchedule(cron="30 2 * * *", timezone="Europe/Zurich")
    got = next_fire_times(schedule, utc(2026, 3, 27, 12), 4)
    assert got == [
        local(ZURICH, 2026, 3, 28, 2, 30),  # CET, 01:30 UTC
        utc(2026, 3, 29, 1, 30),  # the skipped 02:30 CET, moved to 03:30 CEST
        local(ZURICH, 2026, 3, 30, 2, 30),  # CEST, 00:30 UTC
        local(ZURICH, 2026, 3, 31, 2, 30),
    ]
    assert got[1].astimezone(ZURICH).strftime("%H:%M %Z") == "03:30 CEST"
    on_the_day = [t for t in got if t.astimezone(ZURICH).date().isoformat() == "2026-03-29"]
    assert len(on_the_day) == 1


def test_new_york_spring_forward_moves_the_missing_0230_by_the_gap() -> None:
    """On 2026-03-08 02:30 New York does not exist; it fires once at 03:30 EDT, then 02:30 again."""
    schedule = CronSchedule(cron="30 2 * * *", timezone="America/New_York")
    got = next_fire_times(schedule, utc(2026, 3, 6, 12), 4)
    assert got == [
        local(NEW_YORK, 2026, 3, 7, 2, 30),
        utc(2026, 3, 8, 7, 30),  # 03:30 EDT
        local(NEW_YORK, 2026, 3, 9, 2, 30),
        local(NEW_YORK, 2026, 3, 10, 2, 30),
    ]
    assert got[1].astimezone(NEW_YORK).strftime("%H:%M %Z") == "03:30 EDT"


def test_spring_forward_leaves_times_outside_the_gap_alone() -> None:
    """A 03:00 Zurich schedule fires at 03:00 CEST on the spring-forward day, 01:00 UTC."""
    schedule = CronSchedule(cron="0 3 * * *", timezone="Europe/Zurich")
    got = fire_times_between(schedule, utc(2026, 3, 28, 12), utc(2026, 3, 30, 12))
    assert got == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 1, 0)]


# --------------------------------------------------------------------------- fall back


def test_zurich_fall_back_0300_fires_exactly_once_at_0200_utc() -> None:
    """On 2026-10-25 a 03:00 Zurich schedule fires exactly once, at 02:00 UTC (03:00 CET)."""
    schedule = CronSchedule(cron="0 3 * * *", timezone="Europe/Zurich")
    got = fire_times_between(schedule, utc(2026, 10, 23, 12), utc(2026, 10, 27, 12))
    assert got == [
        utc(2026, 10, 24, 1, 0),  # CEST
        utc(2026, 10, 25, 2, 0),  # CET, the day clocks go back
        utc(2026, 10, 26, 2, 0),
        utc(2026, 10, 27, 2, 0),
    ]


def test_zurich_fall_back_repeated_0230_fires_at_both_instants_then_moves_on() -> None:
    """02:30 Zurich happens twice on 2026-10-25: it fires at both, once each, then next day."""
    schedule = CronSchedule(cron="30 2 * * *", timezone="Europe/Zurich")
    got = next_fire_times(schedule, utc(2026, 10, 24, 12), 3)
    assert got == [
        local(ZURICH, 2026, 10, 25, 2, 30, fold=0),  # CEST, 00:30 UTC
        local(ZURICH, 2026, 10, 25, 2, 30, fold=1),  # CET, 01:30 UTC
        utc(2026, 10, 26, 1, 30),
    ]
    assert got[:2] == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)]


def test_new_york_fall_back() -> None:
    """On 2026-11-01 New York 01:30 fires at both of its instants and 03:00 fires once."""
    repeated = CronSchedule(cron="30 1 * * *", timezone="America/New_York")
    assert next_fire_times(repeated, utc(2026, 10, 31, 12), 3) == [
        utc(2026, 11, 1, 5, 30),  # EDT
        utc(2026, 11, 1, 6, 30),  # EST
        utc(2026, 11, 2, 6, 30),
    ]
    once = CronSchedule(cron="0 3 * * *", timezone="America/New_York")
    assert fire_times_between(once, utc(2026, 10, 31, 12), utc(2026, 11, 2, 12)) == [
        utc(2026, 11, 1, 8, 0),
        utc(2026, 11, 2, 8, 0),
    ]


@pytest.mark.parametrize(
    ("tz_name", "since"),
    [
        ("Europe/Zurich", utc(2026, 10, 24, 20)),
        ("America/New_York", utc(2026, 11, 1, 2)),
        ("Australia/Lord_Howe", utc(2026, 4, 4, 10)),  # goes back by half an hour
    ],
)
@pytest.mark.parametrize(
    ("cron", "minutes", "hours"),
    [
        ("*/20 * * * *", set(range(0, 60, 20)), set(range(24))),
        ("30 * * * *", {30}, set(range(24))),
        ("15 1,2 * * *", {15}, {1, 2}),
        ("* 1 * * *", set(range(60)), {1}),
    ],
)
def test_fall_back_matches_a_wall_clock_scan(
    tz_name: str, since: datetime, cron: str, minutes: set[int], hours: set[int]
) -> None:
    """Across a fall-back, fire_times_between is every instant whose wall clock matches."""
    until = since + timedelta(hours=12)
    schedule = CronSchedule(cron=cron, timezone=tz_name)
    expected = wall_clock_matches(ZoneInfo(tz_name), minutes, hours, since, until)
    assert fire_times_between(schedule, since, until) == expected


def test_scheduler_trigger_advances_through_the_fall_back_fold() -> None:
    """The trigger the scheduler uses, asked for the fire after each previous one the way
    APScheduler's scheduler asks (UTC now), neither repeats nor goes back across the fold."""
    trigger = make_trigger(CronSchedule(cron="*/20 * * * *", timezone="Europe/Zurich"))
    since = utc(2026, 10, 25, 0, 50)
    previous = None
    now = since
    fires = []
    for _ in range(8):
        fire = trigger.get_next_fire_time(previous, now)  # type: ignore[attr-defined]
        fires.append(fire.astimezone(UTC))
        # As APScheduler's scheduler asks: just after waking up for the previous fire.
        previous, now = fire, fire.astimezone(UTC) + timedelta(milliseconds=5)
    expected = wall_clock_matches(ZURICH, set(range(0, 60, 20)), set(range(24)), since, fires[-1])
    assert fires == expected
    assert fires[0] == utc(2026, 10, 25, 1, 0)


# --------------------------------------------------------------------------- properties


@settings(deadline=None, max_examples=60)
@given(
    after=st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
    ),
    tz_name=st.sampled_from(
        ["UTC", "Europe/Zurich", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
    ),
    cron=st.sampled_from(
        ["30 2 * * *", "*/20 * * * *", "0 3 * * *", "15 1,2 * * *", "0 0 1 * *", "* 2 * * 0"]
    ),
)
def test_next_fire_times_are_strictly_increasing_utc_instants_after_the_start(
    after: datetime, tz_name: str, cron: str
) -> None:
    """next_fire_times returns count UTC instants, strictly increasing, all after ``after``."""
    got = next_fire_times(CronSchedule(cron=cron, timezone=tz_name), after, 12)
    assert len(got) == 12
    assert all(t.utcoffset() == timedelta(0) for t in got)
    assert got[0] > after
    assert all(a < b for a, b in itertools.pairwise(got))


# --------------------------------------------------------------------------- every


START = utc(2026, 5, 1, 12, 0, 0)


def every_instants(every_s: float, since: datetime, until: datetime) -> list[datetime]:
    """Reference: START + k*every for k >= 0, inside (since, until]."""
    out = []
    k = 0
    while (t := START + timedelta(seconds=every_s * k)) <= until:
        if t > since:
            out.append(t)
        k += 1
    return out


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (START - timedelta(seconds=100), START + timedelta(seconds=500)),  # start included
        (START + timedelta(seconds=90), START + timedelta(seconds=450)),  # ends exact: (..]
        (START + timedelta(seconds=91), START + timedelta(seconds=449)),
        (START + timedelta(hours=5, seconds=7), START + timedelta(hours=6)),
        (START + timedelta(seconds=10), START + timedelta(seconds=20)),  # none inside
    ],
)
def test_every_fires_at_start_plus_multiples_inside_the_half_open_window(
    since: datetime, until: datetime
) -> None:
    """fire_times_between(every) gives START + k*every in (since, until], oldest first."""
    schedule = EverySchedule(every="90s")
    got = fire_times_between(schedule, since, until, start=START)
    assert got == every_instants(90, since, until)


def test_every_limit_keeps_the_newest() -> None:
    """With more fires than ``limit``, the newest ``limit`` are kept, still oldest first."""
    schedule = EverySchedule(every="10m")
    since, until = START, START + timedelta(hours=10)
    everything = every_instants(600, since, until)
    assert len(everything) == 60
    got = fire_times_between(schedule, since, until, start=START, limit=5)
    assert got == everything[-5:]


def test_every_next_fire_times_follow_the_anchor_not_the_query_instant() -> None:
    """next_fire_times(every) counts from the anchor, so a query between fires keeps the grid."""
    schedule = EverySchedule(every="1h30m")
    after = START + timedelta(hours=4, minutes=7)
    got = next_fire_times(schedule, after, 3, start=START)
    assert got == [
        START + timedelta(hours=4, minutes=30),
        START + timedelta(hours=6),
        START + timedelta(hours=7, minutes=30),
    ]


def test_cron_window_excludes_since_and_includes_until() -> None:
    """A cron fire exactly at ``since`` is left out and one exactly at ``until`` is kept."""
    schedule = CronSchedule(cron="0 * * * *")
    got = fire_times_between(schedule, utc(2026, 1, 1, 1), utc(2026, 1, 1, 4))
    assert got == [utc(2026, 1, 1, 2), utc(2026, 1, 1, 3), utc(2026, 1, 1, 4)]
