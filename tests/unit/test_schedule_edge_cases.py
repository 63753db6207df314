"""Schedules that never fire, and `every` with `jitter` keeping its phase."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from orchestrator.manifests.models import CronSchedule, EverySchedule
from orchestrator.scheduling.triggers import make_trigger


@pytest.mark.parametrize("expr", ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6 *"])
def test_cron_that_never_fires_is_refused(expr: str) -> None:
    """A cron expression no date matches (31 February) is an error, not a job that never runs."""
    with pytest.raises(ValidationError, match="never fires"):
        CronSchedule(cron=expr)


def test_cron_on_29_february_is_accepted() -> None:
    """A rare but real date (29 February) is valid."""
    assert CronSchedule(cron="0 0 29 2 *").cron == "0 0 29 2 *"


def test_every_jitter_must_be_shorter_than_the_interval() -> None:
    """`jitter` as long as `every` or longer would let fires overtake each other: refused."""
    with pytest.raises(ValidationError, match="jitter"):
        EverySchedule(every=10, jitter=3600)
    with pytest.raises(ValidationError, match="jitter"):
        EverySchedule(every=60, jitter=60)
    assert EverySchedule(every=60, jitter=59).jitter == 59


def test_every_with_jitter_keeps_its_phase() -> None:
    """Fires of `every` with `jitter` stay within [grid, grid + jitter] of the anchored grid
    however many fire: jitter does not accumulate (APScheduler 3 adds the interval to the
    jittered previous fire time, so the schedule drifts later by jitter/2 per fire)."""
    anchor = datetime(2026, 1, 1, tzinfo=UTC)
    schedule = EverySchedule(every=60, jitter=30)
    trigger = make_trigger(schedule, start=anchor)
    now = anchor
    fire = trigger.get_next_fire_time(None, now)  # type: ignore[attr-defined]
    for _ in range(500):
        # The way APScheduler's scheduler loop asks: from the (jittered) previous fire time.
        fire = trigger.get_next_fire_time(fire, fire)  # type: ignore[attr-defined]
    offset = (fire - anchor) % timedelta(seconds=60)
    assert timedelta(0) <= offset <= timedelta(seconds=30)
    assert fire - anchor < timedelta(seconds=60 * 502)


def test_cron_jitter_must_be_shorter_than_the_gap_between_fires() -> None:
    """A cron jitter as long as the gap between two fires would silently skip fires (APScheduler
    counts from the jittered fire), so it is refused; a short jitter is fine."""
    import pytest
    from pydantic import ValidationError

    from orchestrator.manifests.models import CronSchedule

    with pytest.raises(ValidationError, match="shorter than the shortest gap"):
        CronSchedule(cron="*/5 * * * *", jitter=300)
    assert CronSchedule(cron="*/5 * * * *", jitter=299).jitter == 299
    assert CronSchedule(cron="0 3 * * 1-5", jitter=3600).jitter == 3600
