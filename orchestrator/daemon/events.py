"""What other threads hand to the daemon's main loop: one typed event each.

The watcher's scanner (``Scanned``), APScheduler (``Fire``), the control socket (``Control``)
and signal handlers (``Signal``) only post events; the main loop handles them one at a time
(:mod:`orchestrator.daemon.loop`). ``Dispatch`` and ``Result`` are work the loop posts to itself
again once an unavailable run store answers (``NEEDS_STORE``).
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestrator.scanner import ScanOutcome
from orchestrator.store.base import RunRecord, Trigger


@dataclass(frozen=True)
class Rescan:
    """Reconcile with a scan made on the main loop (jobs whose schedule could not be applied
    while the store was unavailable are applied again)."""


@dataclass(frozen=True)
class Scanned:
    """The scanner thread read the jobs directory."""

    outcome: ScanOutcome


@dataclass(frozen=True)
class Fire:
    """A job's schedule fired; the newest time runs, older ones were missed."""

    job: str
    fire_times: tuple[datetime, ...]


@dataclass(frozen=True)
class Dispatch:
    """A follow-up run (``after``, a token renewal, a run that waited for a token) to start."""

    job: str
    trigger: Trigger
    after_token: bool = False


@dataclass(frozen=True)
class Result:
    """A finished run whose task result is still to be stored."""

    run: RunRecord


@dataclass
class ControlTicket:
    """Who handles one control request: the main loop takes it, or the waiting socket thread
    gives up on it (then the main loop must not act on it: the client was told it did not)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    taken: bool = False
    abandoned: bool = False


@dataclass(frozen=True, eq=False)
class Control:
    """A control-socket request; the answer goes to ``reply``."""

    request: dict[str, Any]
    reply: queue.Queue[dict[str, Any]]
    ticket: ControlTicket | None = None


@dataclass(frozen=True)
class Signal:
    """SIGTERM, SIGINT or SIGHUP arrived (the handler set a flag; this wakes the loop)."""

    signum: int


Event = Rescan | Scanned | Fire | Dispatch | Result | Control | Signal
# Work that needs the run store: kept while it is unavailable, handled once it answers.
NEEDS_STORE: tuple[type, ...] = (Fire, Dispatch, Result)
