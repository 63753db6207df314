"""What the daemon's parts share: settings, the run store and its health, the jobs in effect,
the active runs, the executors, the event queue; and the one guard every step runs under.

Only the main thread reads or changes any of it (other threads post events).
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from orchestrator.errors import LeaseHeldError, ManifestError, StoreUnavailableError
from orchestrator.executors.base import Executor
from orchestrator.outage import Outage
from orchestrator.settings import Settings
from orchestrator.status import JobView
from orchestrator.store.base import RunRecord, Store

from .events import Event

log = structlog.get_logger("orchestrator.daemon")


@dataclass
class Shared:
    settings: Settings
    executors: dict[str, Executor]
    events: queue.Queue[Event] = field(default_factory=queue.Queue)
    store_: Store | None = None
    # the jobs in effect (last known good versions) and new files that never were valid
    jobs: dict[str, JobView] = field(default_factory=dict)
    orphan_errors: dict[Path, ManifestError] = field(default_factory=dict)
    dir_error: str | None = None
    active: dict[str, RunRecord] = field(default_factory=dict)
    draining: bool = False
    # A locked or full database is an outage to wait out, never fatal. Work that failed on
    # it is kept in `deferred` until a probe write succeeds.
    outage: Outage = field(default_factory=lambda: Outage("run store"))
    deferred: list[Event] = field(default_factory=list)
    notify_status: Callable[[], None] = lambda: None
    # jobs a person suspended at runtime (`orchestrator suspend`): name -> {"since": iso}
    paused: dict[str, dict[str, Any]] = field(default_factory=dict)
    run_ended: Callable[[str], None] = lambda job: None  # notifications (daemon/operations.py)

    @property
    def store(self) -> Store:
        """The run store (open from start-up until shutdown)."""
        if self.store_ is None:
            raise RuntimeError("the run store is not open")
        return self.store_

    def require_store(self) -> Store:
        """The store, failing fast while it is known to be unavailable (a write would wait out
        the busy timeout and block the loop, only to fail)."""
        if self.outage.active:
            since = self.outage.since.isoformat() if self.outage.since else "?"
            raise StoreUnavailableError(
                f"the run store has been unavailable since {since} ({self.outage.error}); "
                "nothing was recorded, try again later"
            )
        return self.store

    def executor_of(self, run: RunRecord) -> Executor:
        return self.executors[run.executor or "local"]

    def store_failed(self, what: str, exc: BaseException, retry: Event | None = None) -> None:
        """Note a store failure: the outage backs off, and ``retry`` (an event) is kept to be
        handled again once the store answers."""
        delay = self.outage.failed(exc)
        if retry is not None and retry not in self.deferred:
            self.deferred.append(retry)
        log.warning(
            "store_unavailable",
            step=what,
            error=str(exc),
            retry_in_s=round(delay, 1),
            deferred=len(self.deferred),
        )
        self.notify_status()

    def step(self, what: str, action: Callable[..., Any], *args: Any) -> bool:
        """Run one step; log any failure with context and go on (one job's or run's trouble
        never stops the others). Returns whether it succeeded. A store that is unavailable
        starts (or extends) an outage; a lost lease is re-raised: the daemon must stop."""
        try:
            action(*args)
        except LeaseHeldError:
            raise
        except StoreUnavailableError as exc:
            self.store_failed(what, exc)
            return False
        except Exception:
            log.exception("daemon_step_failed", step=what)
            return False
        return True

    def guarded(self, action: Callable[..., Any], *args: Any) -> bool:
        """:meth:`step` named after the action."""
        return self.step(getattr(action, "__name__", "action"), action, *args)
