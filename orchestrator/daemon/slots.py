"""Runs waiting for a slot of an executor with a cap (``capacity``: the local executor's
``ORCH_MAX_LOCAL_RUNS``, 4 by default: login-node etiquette). A due run that admission
started, but that would exceed the cap, waits here, first come first served, and starts when
a run of that executor ends. One waiting run per job (a second fire of a job already waiting is
skipped and logged, as ``concurrency: forbid`` would). The queue is kept in the run store, so
a restarted daemon starts what was waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import structlog

from orchestrator.clock import utcnow
from orchestrator.errors import StoreUnavailableError
from orchestrator.executors.base import Executor
from orchestrator.store.base import Trigger

from .state import Shared

log = structlog.get_logger("orchestrator.daemon")

STATE_KEY = "slot_queue"  # in job_state under the job ""


@dataclass(frozen=True)
class Waiting:
    job: str
    executor: str
    trigger: str
    since: str
    scheduled_for: str | None = None
    attempt: int = 1
    retry_of: str | None = None
    array: str | None = None
    after_token: bool = False


def full(shared: Shared, executor: Executor) -> bool:
    """Whether the executor runs as many runs as its cap allows."""
    cap = getattr(executor, "capacity", None)
    if not isinstance(cap, int) or cap <= 0:
        return False
    return sum(1 for r in shared.active.values() if r.executor == executor.name) >= cap


class Slots:
    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.queue: list[Waiting] = []

    def wait(
        self,
        job: str,
        executor: Executor,
        trigger: Trigger,
        scheduled_for: datetime | None,
        attempt: int,
        retry_of: str | None,
        array: str | None,
        after_token: bool,
    ) -> bool:
        """Queue a run; False when one of the job waits already (this one is skipped)."""
        if any(w.job == job for w in self.queue):
            log.warning("run_skipped_already_waiting_for_slot", job=job, trigger=str(trigger))
            return False
        self.queue.append(
            Waiting(
                job,
                executor.name,
                str(trigger),
                utcnow().isoformat(),
                scheduled_for.isoformat() if scheduled_for else None,
                attempt,
                retry_of,
                array,
                after_token,
            )
        )
        log.info(
            "run_waiting_for_slot",
            job=job,
            executor=executor.name,
            cap=getattr(executor, "capacity", None),
            waiting=len(self.queue),
        )
        self.save()
        return True

    def release(self, dispatch: Callable[..., Any]) -> None:
        """Start waiting runs, oldest first, while their executor has room."""
        if self.shared.draining or not self.queue:
            return
        for waiting in list(self.queue):
            executor = self.shared.executors.get(waiting.executor)
            if executor is not None and full(self.shared, executor):
                continue
            self.queue.remove(waiting)
            self.save()
            if waiting.job not in self.shared.jobs:
                log.info("slot_wait_dropped_job_removed", job=waiting.job)
                continue
            dispatch(
                waiting.job,
                Trigger(waiting.trigger),
                scheduled_for=datetime.fromisoformat(waiting.scheduled_for)
                if waiting.scheduled_for
                else None,
                attempt=waiting.attempt,
                retry_of=waiting.retry_of,
                array=waiting.array,
                after_token=waiting.after_token,
            )

    def status(self) -> list[dict[str, Any]]:
        return [asdict(w) for w in self.queue]

    def save(self) -> None:
        try:
            self.shared.store.set_job_state("", STATE_KEY, [asdict(w) for w in self.queue])
        except StoreUnavailableError as exc:  # kept in memory; the next change saves it
            log.warning("slot_queue_save_failed", error=str(exc))

    def load(self) -> None:
        raw = self.shared.store.get_job_state("", STATE_KEY) or []
        self.queue = [Waiting(**w) for w in raw if isinstance(w, dict)]
        if self.queue:
            log.info("slot_queue_resumed", waiting=len(self.queue))
