"""Retry backoff: exponential from a base, capped."""

from __future__ import annotations

import pytest

from orchestrator.scheduling.triggers import retry_delay_s


def test_backoff_doubles_then_caps() -> None:
    """Each retry waits twice as long as the one before, never longer than the cap."""
    delays = [retry_delay_s(30, 300, attempt) for attempt in range(1, 7)]
    assert delays == [30, 60, 120, 240, 300, 300]


def test_attempts_count_from_one() -> None:
    """Attempt 0 is a programming error, not a zero delay."""
    with pytest.raises(ValueError):
        retry_delay_s(1, 10, 0)
