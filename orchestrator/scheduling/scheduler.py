"""The APScheduler 3 wrapper: turns schedules into ``fire`` callbacks with their fire time.

APScheduler only decides *when*; what a fire does (concurrency, run records, catch-up) is the
daemon's business, so each fire is handed to ``on_fire(job_name, scheduled_for)`` and the
daemon's main loop acts on it. That keeps all run state changes on one thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.events import EVENT_JOB_SUBMITTED, JobSubmissionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from orchestrator.manifests.models import CronSchedule, EverySchedule
from orchestrator.scheduling.triggers import make_trigger

# (job name, every fire time due, oldest first): more than one when the process was frozen or
# starved for longer than an interval; the daemon runs the newest and records the others
# missed, so that no fire ever vanishes without a record.
FireCallback = Callable[[str, list[datetime]], None]


def _noop() -> None:
    """APScheduler needs a callable; the work happens in the submission listener."""


class Scheduler:
    """Schedules jobs by name. Thread-safe (APScheduler's own locking)."""

    def __init__(self, on_fire: FireCallback) -> None:
        self._on_fire = on_fire
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(max_workers=2)},
            # coalesce=False: APScheduler then hands over every overdue fire time (coalescing
            # would drop all but the last without a trace); the daemon decides what they mean.
            job_defaults={"coalesce": False, "misfire_grace_time": None, "max_instances": 1000},
        )
        self._scheduler.add_listener(self._submitted, EVENT_JOB_SUBMITTED)
        logging.getLogger("apscheduler").setLevel(logging.WARNING)

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def schedule(
        self,
        name: str,
        schedule: CronSchedule | EverySchedule,
        anchor: datetime | None = None,
        after: datetime | None = None,
    ) -> datetime | None:
        """Add or replace the job's trigger; returns its next fire time (UTC).

        ``after``: the first fire is the first one strictly after this time (the instant up to
        which the daemon settled missed fires). Without it APScheduler counts from its own
        clock, a little later, and a fire falling in between would be lost."""
        trigger: Any = make_trigger(schedule, start=anchor)
        extra: dict[str, Any] = {}
        if after is not None:
            first = trigger.get_next_fire_time(None, after + timedelta(microseconds=1))
            extra["next_run_time"] = first
        job = self._scheduler.add_job(
            _noop,
            trigger=trigger,
            id=name,
            name=name,
            replace_existing=True,
            **extra,
        )
        nxt = getattr(job, "next_run_time", None)
        return nxt.astimezone(UTC) if nxt else None

    def unschedule(self, name: str) -> None:
        if self._scheduler.get_job(name) is not None:
            self._scheduler.remove_job(name)

    def next_fire_time(self, name: str) -> datetime | None:
        job = self._scheduler.get_job(name)
        nxt = job.next_run_time if job is not None else None
        return nxt.astimezone(UTC) if nxt else None

    def scheduled_names(self) -> set[str]:
        return {job.id for job in self._scheduler.get_jobs()}

    def _submitted(self, event: JobSubmissionEvent) -> None:
        times = event.scheduled_run_times or [datetime.now(UTC)]
        self._on_fire(event.job_id, sorted(t.astimezone(UTC) for t in times))
