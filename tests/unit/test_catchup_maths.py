"""Catch-up maths over long down-times."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestrator.errors import ManifestError
from orchestrator.manifests.loader import load_manifest
from orchestrator.manifests.models import EverySchedule
from orchestrator.scheduling.triggers import fire_times_between


def test_week_of_two_second_fires_keeps_the_newest_without_walking() -> None:
    """A week down with `every: 2s` yields the newest `limit` instants, on the anchor's grid."""
    anchor = datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    since = anchor + timedelta(hours=1, seconds=1)
    until = since + timedelta(days=7)
    fires = fire_times_between(EverySchedule(every=2), since, until, start=anchor, limit=100)
    assert len(fires) == 100
    assert fires[-1] <= until < fires[-1] + timedelta(seconds=2)
    assert all((f - anchor).total_seconds() % 2 == 0 for f in fires)
    assert all(b - a == timedelta(seconds=2) for a, b in itertools.pairwise(fires))


def test_every_window_before_the_anchor_is_empty() -> None:
    """Nothing fires before an `every` schedule's anchor."""
    anchor = datetime(2026, 1, 1, tzinfo=UTC)
    assert (
        fire_times_between(
            EverySchedule(every=60),
            anchor - timedelta(hours=1),
            anchor - timedelta(seconds=1),
            start=anchor,
        )
        == []
    )


@pytest.mark.parametrize("text", ["yes", "1", "on"])
def test_suspend_takes_only_real_booleans(tmp_path: Path, text: str) -> None:
    """`suspend: yes` is an error, not silently true: only true/false are booleans."""
    path = tmp_path / "s.yaml"
    path.write_text(
        "apiVersion: orchestrator/v1\nkind: Command\nname: s\n"
        f"suspend: {text}\nspec: {{command: ['true']}}\n"
    )
    with pytest.raises(ManifestError) as err:
        load_manifest(path, check_perms=False)
    assert err.value.problems[0].line == 4
    assert err.value.problems[0].field == "suspend"


def test_jitter_delays_fires_by_at_most_the_jitter() -> None:
    """`jitter` delays each fire by a random amount within [0, jitter], never earlier."""
    from orchestrator.manifests.models import CronSchedule
    from orchestrator.scheduling.triggers import make_trigger

    schedule = CronSchedule(cron="0 3 * * *", timezone="UTC", jitter=600)
    trigger = make_trigger(schedule)
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    nominal = datetime(2026, 6, 2, 3, 0, tzinfo=UTC)
    delays = []
    for _ in range(200):
        fire = trigger.get_next_fire_time(None, now)  # type: ignore[attr-defined]
        delays.append((fire - nominal).total_seconds())
    assert all(0 <= d <= 600 for d in delays)
    assert max(delays) - min(delays) > 60  # really random, not a constant offset
