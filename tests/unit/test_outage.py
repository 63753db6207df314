"""The outage bookkeeping the daemon uses for a locked or full run store (a fake clock)."""

from __future__ import annotations

from orchestrator.outage import Outage


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    """Each failure doubles the wait before the next probe, never beyond max_delay_s, and the
    probe is due only once that wait has passed."""
    clock = _Clock()
    outage = Outage("run store", base_delay_s=1.0, max_delay_s=8.0, clock=clock)
    delays = [outage.failed("database is locked") for _ in range(6)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert not outage.retry_due()
    clock.now += 7.9
    assert not outage.retry_due()
    clock.now += 0.2
    assert outage.retry_due()


def test_backoff_saturates_however_long_the_outage_lasts() -> None:
    """Ten thousand failures in a row never overflow the delay."""
    outage = Outage("run store", max_delay_s=60.0, clock=_Clock())
    for _ in range(10_000):
        delay = outage.failed(OSError(28, "No space left on device"))
    assert delay == 60.0


def test_recovery_clears_the_outage_and_restarts_the_backoff() -> None:
    """A success ends the outage once (reported True), and a new failure starts from the base
    delay again; status shows the error and its start only while it lasts."""
    outage = Outage("run store", clock=_Clock())
    assert outage.as_dict() == {"ok": True}
    assert outage.summary() is None
    outage.failed("disk I/O error")
    outage.failed("disk I/O error")
    shown = outage.as_dict()
    assert shown["ok"] is False
    assert shown["error"] == "disk I/O error"
    assert shown["failures"] == 2
    assert shown["since"] is not None
    assert "run store unavailable (disk I/O error)" in (outage.summary() or "")
    assert outage.recovered() is True
    assert outage.recovered() is False
    assert outage.as_dict() == {"ok": True}
    assert outage.failed("database is locked") == 1.0
