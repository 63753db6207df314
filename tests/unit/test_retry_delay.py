"""Retry backoff: exponential from a base, capped."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.durations import MAX_DURATION_S
from orchestrator.scheduling.triggers import retry_delay_s


def test_backoff_doubles_then_caps() -> None:
    """Each retry waits twice as long as the one before, never longer than the cap."""
    delays = [retry_delay_s(30, 300, attempt) for attempt in range(1, 7)]
    assert delays == [30, 60, 120, 240, 300, 300]


def test_attempts_count_from_one() -> None:
    """Attempt 0 is a programming error, not a zero delay."""
    with pytest.raises(ValueError, match="attempt counts from 1"):
        retry_delay_s(1, 10, 0)


@pytest.mark.parametrize("attempt", [64, 100, 101, 1024, 1025, 10**6])
def test_backoff_saturates_at_any_attempt_count(attempt: int) -> None:
    """A huge attempt count gives the cap: no inf, no OverflowError (2**(attempt-1) as an int
    overflows a float past 1024), and the delay can be added to a datetime."""
    delay = retry_delay_s(30, 3600, attempt)
    assert delay == 3600
    assert datetime.now(UTC) + timedelta(seconds=delay) > datetime.now(UTC)


@pytest.mark.parametrize(
    ("base_s", "max_s"), [(1e300, math.inf), (30, math.inf), (1e308, 1e308), (30, 10**30)]
)
def test_backoff_never_exceeds_the_longest_duration(base_s: float, max_s: float) -> None:
    """Whatever base and cap a caller passes, the delay is at most MAX_DURATION_S, so that
    `now + timedelta(seconds=delay)` cannot overflow (a daemon crash-looped on that)."""
    for attempt in (1, 2, 50, 101, 5000):
        delay = retry_delay_s(base_s, max_s, attempt)
        assert 0 <= delay <= MAX_DURATION_S
        datetime.now(UTC) + timedelta(seconds=delay)


def test_backoff_of_nan_or_zero_is_no_wait() -> None:
    """A base of zero (or NaN, which would poison min()) gives no wait, not NaN."""
    assert retry_delay_s(0, 60, 3) == 0
    assert retry_delay_s(math.nan, 60, 3) == 0
    assert retry_delay_s(30, math.nan, 3) == 0
