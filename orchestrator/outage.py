"""When a resource the daemon needs (the run store) fails for a while: since when, why, and
when to try again. Pure bookkeeping over a monotonic clock, so it is tested without a daemon.

The daemon never dies of a locked or full store: the work that failed is kept, a probe is made
after a backoff (1 s, doubling, at most ``max_delay_s``), and once the probe succeeds the kept
work is done. ``status`` and systemd's STATUS show the outage while it lasts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass
class Outage:
    """The state of one resource: healthy, or failing since ``since`` with ``error``."""

    what: str
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    error: str | None = None
    since: datetime | None = None
    failures: int = 0
    retry_at: float = 0.0
    recoveries: int = field(default=0)

    @property
    def active(self) -> bool:
        return self.error is not None

    def failed(self, error: BaseException | str) -> float:
        """Note one more failure; returns the delay before the next try, in seconds."""
        if self.error is None:
            self.since = datetime.now(UTC)
        self.error = str(error)
        self.failures += 1
        # Saturates: 2**n is never computed past the cap (no overflow however long it lasts).
        exponent = min(self.failures - 1, 32)
        delay = min(self.base_delay_s * (2.0**exponent), self.max_delay_s)
        self.retry_at = self.clock() + delay
        return delay

    def retry_due(self) -> bool:
        return self.active and self.clock() >= self.retry_at

    def recovered(self) -> bool:
        """Note a success; returns whether this ended an outage."""
        if self.error is None:
            return False
        self.error = None
        self.since = None
        self.failures = 0
        self.retry_at = 0.0
        self.recoveries += 1
        return True

    def as_dict(self) -> dict[str, Any]:
        """For ``status --json``: ``ok``, and while failing the error, since, next try."""
        if self.error is None:
            return {"ok": True}
        return {
            "ok": False,
            "error": self.error,
            "since": self.since.isoformat() if self.since else None,
            "failures": self.failures,
            "next_retry_in_s": round(max(0.0, self.retry_at - self.clock()), 1),
        }

    def summary(self) -> str | None:
        """One line for systemd's STATUS, or None when healthy."""
        if self.error is None:
            return None
        wait = max(0.0, self.retry_at - self.clock())
        return f"{self.what} unavailable ({self.error}); retrying in {wait:.0f} s"
