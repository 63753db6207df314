"""Make the scheduled jobs match the valid manifests on disk (the desired state), the way a
kubelet does: jobs added, changed and removed; an invalid edit keeps the last good version.
Then what a schedule brings: fires missed while the daemon was down (caught up or recorded
missed), a fire that came late, and ``on: change`` runs.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime

import structlog

from orchestrator.clock import utcnow
from orchestrator.errors import StoreUnavailableError
from orchestrator.manifests.loader import DirectoryScan, LoadedManifest
from orchestrator.manifests.models import ChangeSchedule, CronSchedule, EverySchedule
from orchestrator.scanner import Scanner, ScanOutcome
from orchestrator.scheduling.scheduler import Scheduler
from orchestrator.scheduling.triggers import fire_times_between
from orchestrator.status import JobView
from orchestrator.store.base import Trigger

from .state import Shared
from .supervision import Runs

log = structlog.get_logger("orchestrator.daemon")

MAX_MISSED_RECORDS = 100


def schedule_signature(loaded: LoadedManifest) -> str:
    manifest = loaded.manifest
    if manifest.suspend or manifest.schedule is None:
        return f"suspended={manifest.suspend};none"
    return manifest.schedule.model_dump_json()


def desired_jobs(current: dict[str, JobView], scan: DirectoryScan) -> dict[str, JobView]:
    """The jobs a scan asks for: its valid manifests; for a known job whose file is now invalid
    or still being written, the version in effect."""
    desired = {name: JobView(lm.path, lm) for name, lm in scan.valid.items()}
    # An invalid edit of a file whose job is known keeps the last known good version.
    for path, err in scan.invalid.items():
        for name, view in current.items():
            if view.path == path and name not in desired and view.loaded is not None:
                desired[name] = JobView(path, view.loaded, err)
    # A file still being written (invalid, changed moments ago) changes nothing yet: its job
    # stays as it is until the file has settled and is read again.
    for path in scan.unsettled:
        for name, view in current.items():
            if view.path == path and name not in desired:
                desired[name] = view
    return desired


def paused_view(view: JobView, paused: bool) -> JobView:
    """The view with its manifest suspended while a person has suspended the job at runtime
    (`orchestrator suspend JOB`): every part of the daemon honours `suspend` already."""
    if not paused or view.loaded is None or view.loaded.manifest.suspend:
        return view
    manifest = view.loaded.manifest.model_copy(update={"suspend": True})
    return dataclasses.replace(view, loaded=dataclasses.replace(view.loaded, manifest=manifest))


def _log_warnings(view: JobView) -> None:
    """What `validate` would warn about, for a job that runs (a placeholder left in is almost
    surely a failure to come); a suspended example is left in peace."""
    loaded = view.loaded
    if loaded is None or loaded.manifest.suspend:
        return
    for w in loaded.warnings:
        log.warning(
            "manifest_warning", job=view.name, where=f"{w.path}:{w.line}:{w.col}", field=w.field,
            warning=w.message,
        )  # fmt: skip


class Reconciler:
    def __init__(self, shared: Shared, runs: Runs, scheduler: Scheduler, scanner: Scanner):
        self.shared = shared
        self.runs = runs
        self.scheduler = scheduler
        self.scanner = scanner
        # Jobs whose schedule could not be applied (the store was locked): applied again by a
        # later reconcile, instead of being taken as done.
        self.unapplied: set[str] = set()

    def reconcile(self, startup: bool = False, outcome: ScanOutcome | None = None) -> None:
        """``outcome`` is a scan made by the scanner thread; without one the directory is
        scanned here (start-up and `reload`, whose callers wait for the result)."""
        shared = self.shared
        t0 = time.perf_counter()
        previous_orphans = shared.orphan_errors
        if outcome is None:
            outcome = self.scanner.scan_now()
        if outcome.scan is None:
            # Keep what runs; take no new instructions from a directory others can write,
            # that is missing, or that cannot be listed.
            if outcome.dir_error != shared.dir_error:
                log.error(
                    "jobs_dir_missing" if outcome.dir_missing else "jobs_dir_refused",
                    jobs_dir=str(shared.settings.jobs_dir),
                    error=outcome.dir_error,
                )
            shared.dir_error = outcome.dir_error
            shared.notify_status()
            return
        shared.dir_error = None
        scan = outcome.scan
        desired = {
            n: paused_view(v, n in shared.paused)
            for n, v in desired_jobs(shared.jobs, scan).items()
        }
        old = shared.jobs
        # The new desired state is in effect before any run starts, so that a catch-up or
        # on-change run dispatched below finds its job.
        shared.jobs = desired
        shared.orphan_errors = {
            p: e for p, e in scan.invalid.items() if not any(v.path == p for v in desired.values())
        }
        for name in sorted(set(old) - set(desired)):
            shared.guarded(self.remove_job, old[name])
        for name, view in sorted(desired.items()):
            self._apply(name, old.get(name), view, startup)
        self.unapplied &= set(desired)
        for path, err in shared.orphan_errors.items():
            if path not in previous_orphans or str(previous_orphans[path]) != str(err):
                log.error("manifest_invalid", path=str(path), error=str(err))
        self.scanner.set_owners({name: view.path for name, view in desired.items()})
        shared.notify_status()
        log.debug("reconciled", jobs=len(desired), seconds=round(time.perf_counter() - t0, 4))

    def _apply(self, name: str, before: JobView | None, view: JobView, startup: bool) -> None:
        if view.error is not None and (
            before is None or before.error is None or str(before.error) != str(view.error)
        ):
            log.error("manifest_invalid_keeping_last_good", job=name, error=str(view.error))
        if before is None or before.loaded is None or name in self.unapplied:
            applied = self.shared.guarded(self.add_job, view, startup)
        elif view.loaded is not None and (
            before.loaded.content_hash != view.loaded.content_hash
            or before.loaded.manifest.suspend != view.loaded.manifest.suspend  # suspend/resume
        ):
            applied = self.shared.guarded(self.change_job, before, view)
        else:
            return
        if applied:
            self.unapplied.discard(name)
        else:
            self.unapplied.add(name)

    def add_job(self, view: JobView, startup: bool) -> None:
        assert view.loaded is not None
        self.shared.require_store()
        manifest = view.loaded.manifest
        log.info("job_added", job=view.name, path=str(view.path), kind=manifest.kind)
        _log_warnings(view)
        self.apply_schedule(view, startup=startup)
        if isinstance(manifest.schedule, ChangeSchedule) and not manifest.suspend:
            self._maybe_change_run(view)

    def change_job(self, before: JobView, view: JobView) -> None:
        assert before.loaded is not None
        assert view.loaded is not None
        self.shared.require_store()
        same_schedule = schedule_signature(before.loaded) == schedule_signature(view.loaded)
        log.info("job_changed", job=view.name, schedule_changed=not same_schedule)
        _log_warnings(view)
        if not same_schedule:
            self.apply_schedule(view, startup=False)
        manifest = view.loaded.manifest
        if isinstance(manifest.schedule, ChangeSchedule) and not manifest.suspend:
            self._maybe_change_run(view)

    def remove_job(self, view: JobView) -> None:
        name = view.name
        self.scheduler.unschedule(name)
        if self.shared.store_ is not None:
            self.runs.followups.forget_job(name)  # a removed job's retry must not come back
            if self.shared.paused.pop(name, None) is not None:  # nor its runtime suspension
                self.shared.store_.set_job_state(name, "paused", None)
        policy = view.loaded.manifest.policy if view.loaded else None
        active = [r for r in self.shared.active.values() if r.job == name]
        log.info("job_removed", job=name, active_runs=len(active))
        if policy is not None and policy.on_remove == "cancel":
            for run in active:
                self.runs.cancel(run)

    # ------------------------------------------------------------ schedules

    def apply_schedule(self, view: JobView, startup: bool) -> None:
        """(Re)schedule a job; on start-up, first settle the fires missed while down."""
        assert view.loaded is not None
        store = self.shared.store
        name = view.name
        manifest = view.loaded.manifest
        sig = schedule_signature(view.loaded)
        schedule = manifest.schedule
        if manifest.suspend or not isinstance(schedule, CronSchedule | EverySchedule):
            self.scheduler.unschedule(name)
            store.set_job_state(name, "schedule_sig", sig)
            store.set_job_state(name, "scheduled_through", None)
            if manifest.suspend:
                log.info("job_suspended", job=name)
            return
        now = utcnow()
        stored_sig = store.get_job_state(name, "schedule_sig")
        anchor_raw = store.get_job_state(name, "anchor")
        if stored_sig == sig and anchor_raw:
            anchor = datetime.fromisoformat(anchor_raw)
            if startup:
                self._catch_up(view, schedule, anchor, now)
        else:
            # A new or changed schedule counts from now: nothing before it was missed.
            anchor = now
            store.set_job_state(name, "anchor", anchor.isoformat())
            store.set_job_state(name, "schedule_sig", sig)
            store.set_job_state(name, "scheduled_through", now.isoformat())
        # Fires up to `now` were settled above (caught up, recorded missed, or none: a new
        # schedule); the scheduler starts strictly after it, so none falls in between.
        nxt = self.scheduler.schedule(name, schedule, anchor=anchor, after=now)
        log.info("job_scheduled", job=name, next_run=nxt.isoformat() if nxt else None)

    def _catch_up(
        self, view: JobView, schedule: CronSchedule | EverySchedule, anchor: datetime, now: datetime
    ) -> None:
        assert view.loaded is not None
        store = self.shared.store
        name = view.name
        through_raw = store.get_job_state(name, "scheduled_through")
        if not through_raw:
            store.set_job_state(name, "scheduled_through", now.isoformat())
            return
        through = datetime.fromisoformat(through_raw)
        # A fire whose run was recorded is not missed even if the daemon died before it
        # could advance scheduled_through (crash between the two writes).
        recent = [
            r.scheduled_for
            for r in store.history(name, limit=20)
            if r.scheduled_for is not None and r.trigger in (Trigger.SCHEDULE, Trigger.CATCHUP)
        ]
        if recent and max(recent) > through:
            through = max(recent)
        misses = fire_times_between(schedule, through, now, start=anchor, limit=MAX_MISSED_RECORDS)
        if not misses:
            store.set_job_state(name, "scheduled_through", now.isoformat())
            return
        window = schedule.catchup
        newest = misses[-1]
        caught_up = window is not None and (now - newest).total_seconds() <= window
        manifest_hash = view.loaded.content_hash
        for missed in misses[:-1] if caught_up else misses:
            store.record_missed(
                name, manifest_hash, missed, "daemon was not running when this run was due"
            )
        log.warning(
            "runs_missed",
            job=name,
            missed=len(misses) - (1 if caught_up else 0),
            catching_up=newest.isoformat() if caught_up else None,
        )
        if caught_up:
            self.runs.dispatch(name, Trigger.CATCHUP, scheduled_for=newest)
        # Last: a crash before this point leaves the misses to be settled again on the next
        # start, and the records made so far (`recent` above) keep them from being doubled.
        store.set_job_state(name, "scheduled_through", now.isoformat())

    def _maybe_change_run(self, view: JobView) -> None:
        assert view.loaded is not None
        store = self.shared.store
        if store.get_job_state(view.name, "last_change_hash") == view.loaded.content_hash:
            return
        store.set_job_state(view.name, "last_change_hash", view.loaded.content_hash)
        self.runs.dispatch(view.name, Trigger.CHANGE)

    def fire(self, job: str, fire_times: tuple[datetime, ...]) -> None:
        """Run the newest due fire; older ones (the process was frozen or starved for longer
        than an interval) are recorded missed, as fires missed while the daemon was down."""
        store = self.shared.store
        view = self.shared.jobs.get(job)
        if view is None or view.loaded is None:
            return
        *older, scheduled_for = fire_times
        if older:
            # Idempotent: this event may be handled again after a store outage.
            recorded = {r.scheduled_for for r in store.history(job, limit=len(older) + 20)}
            for missed in older:
                if missed not in recorded:
                    store.record_missed(
                        job,
                        view.loaded.content_hash,
                        missed,
                        "the daemon could not run on time (frozen or overloaded)",
                    )
            log.warning("runs_missed", job=job, missed=len(older), reason="daemon_late")
        self.runs.dispatch(job, Trigger.SCHEDULE, scheduled_for=scheduled_for)
        # The run is recorded: failing to note the fire must not make the event run again
        # (catch-up also counts recorded runs as fired).
        try:
            store.set_job_state(job, "scheduled_through", scheduled_for.isoformat())
        except StoreUnavailableError as exc:
            self.shared.store_failed("scheduled_through", exc)
