"""The daemon's lifecycle: start, reconcile, dispatch, follow runs, signals, drain.

All run state changes happen on the main thread, which consumes one event queue. Other
threads only post events: the watcher (``changed``), APScheduler (``fire``), the control
socket (``control``) and signal handlers (``signal``). The main loop also ticks (at most once
a second when idle, every 0.25 s while runs are active) to follow runs, retry, rescan, renew
the lease and feed the systemd watchdog.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import os
import queue
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from orchestrator.control import ControlServer
from orchestrator.errors import (
    LeaseHeldError,
    ManifestError,
    OrchestratorError,
    StoreError,
    StoreUnavailableError,
)
from orchestrator.executors.base import Outcome, RunSpec
from orchestrator.executors.local import LocalExecutor
from orchestrator.executors.slurm.executor import SlurmExecutor
from orchestrator.fsinfo import filesystem_type, is_network_filesystem
from orchestrator.lease import Lease
from orchestrator.manifests.loader import (
    DirectoryScan,
    LoadedManifest,
    check_permissions,
)
from orchestrator.manifests.models import (
    ChangeSchedule,
    CronSchedule,
    EverySchedule,
)
from orchestrator.manifests.models import (
    SlurmExecutor as SlurmExecutorSpec,
)
from orchestrator.manifests.watch import DirectoryWatcher
from orchestrator.outage import Outage
from orchestrator.scanner import Scanner, ScanOutcome
from orchestrator.scheduling.scheduler import Scheduler
from orchestrator.scheduling.triggers import fire_times_between, retry_delay_s
from orchestrator.sdnotify import Notifier
from orchestrator.settings import Settings
from orchestrator.statedir import make_run_dir, prepare_state_dir
from orchestrator.status import JobView, job_row
from orchestrator.store.base import ACTIVE_STATES, RunRecord, RunState, Trigger
from orchestrator.store.sqlite import SQLiteStore
from orchestrator.tasks.base import build_invocation
from orchestrator.tasks.python_task import read_result as read_task_result

log = structlog.get_logger("orchestrator.daemon")

MAX_MISSED_RECORDS = 100
# job_state key: runs whose end is recorded but whose follow-ups (retry, `after`) may not be
# done yet; written before the end is recorded, cleared once they are.
FOLLOWUPS_KEY = "followups_pending"
# The longest wait before a retry, whatever the policy says (a year; models bound it too).
MAX_RETRY_DELAY_S = 366 * 86400.0
RETRYABLE = {RunState.FAILED, RunState.TIMED_OUT, RunState.LOST, RunState.INTERRUPTED}
# Events whose work needs the run store: kept while it is unavailable, done once it is back.
STORE_EVENTS = ("fire", "dispatch", "result")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _schedule_signature(loaded: LoadedManifest) -> str:
    manifest = loaded.manifest
    if manifest.suspend or manifest.schedule is None:
        return f"suspended={manifest.suspend};none"
    return manifest.schedule.model_dump_json()


@dataclass(order=True)
class _Retry:
    due: datetime
    job: str = field(compare=False)
    attempt: int = field(compare=False)
    retry_of: str = field(compare=False)
    array: str | None = field(default=None, compare=False)  # failed array tasks only


@dataclass
class _ControlTicket:
    """Who handles one control request: the main loop takes it, or the waiting socket thread
    gives up on it (then the main loop must not act on it: the client was told it did not)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    taken: bool = False
    abandoned: bool = False


class DeferredError(OrchestratorError):
    """A manual trigger that will run later (it waits for a token job)."""


class Daemon:
    """One daemon per state directory (the lease enforces it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.jobs: dict[str, JobView] = {}
        self.orphan_errors: dict[Path, ManifestError] = {}  # new files that never were valid
        self.dir_error: str | None = None
        self.active: dict[str, RunRecord] = {}
        self.retries: list[_Retry] = []
        self._stop_requested = False
        self._reload_requested = False
        self._draining = False
        # job -> (token job it waits for, the trigger it was due with): runs deferred by
        # `requires:` until the token job has renewed the token.
        self.waiting_for_token: dict[str, tuple[str, Trigger]] = {}
        self.started_at = utcnow()
        # The run store's health: a locked or full database is an outage to wait out, never
        # fatal. Work that failed on it is kept in _deferred (event tuples) until a probe
        # write succeeds; jobs whose schedule could not be applied are re-applied then.
        self.store_outage = Outage("run store")
        self._deferred: list[tuple[Any, ...]] = []
        self._unapplied: set[str] = set()
        self._retries_dirty: set[str] = set()
        # Local runs the drain cancelled: recorded 'interrupted' (retried by the next daemon
        # per policy), not 'cancelled' (which means a person or a policy asked for it).
        self._drain_cancelled: set[str] = set()
        self.notifier = Notifier.from_env()
        self.lease = Lease(settings.state_dir, heartbeat_s=settings.heartbeat_s)
        self.store: SQLiteStore | None = None
        self.executor = LocalExecutor()
        self.slurm = SlurmExecutor(
            store=None,
            poll_min_s=settings.slurm_poll_min_s,
            poll_max_s=settings.slurm_poll_max_s,
            lost_grace_s=settings.slurm_lost_grace_s,
        )
        self.scheduler = Scheduler(self._on_fire)
        # Manifests are read off the main loop (a huge or hung file must not stall it).
        self.scanner = Scanner(
            settings.jobs_dir,
            lambda outcome: self.events.put(("scanned", outcome)),
            settle_s=settings.settle_s,
        )
        self.watcher = DirectoryWatcher(
            settings.jobs_dir,
            self.scanner.request,
            debounce_s=settings.debounce_s,
            force_polling=settings.force_polling,
        )
        self.control = ControlServer(settings.control_socket, self._on_control)

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the process exit code."""
        s = self.settings
        prepare_state_dir(s)  # the state dir and runs/: ours, 0700 (issue 8, point 7)
        check_permissions(s.jobs_dir)  # refuse to run commands from a directory others can write
        takeover = self.lease.acquire()
        log.info(
            "daemon_starting",
            pid=os.getpid(),
            host=socket.gethostname(),
            jobs_dir=str(s.jobs_dir),
            state_dir=str(s.state_dir),
            lease_takeover=takeover or None,
        )
        if is_network_filesystem(s.state_dir):
            log.warning(
                "state_dir_on_network_filesystem",
                state_dir=str(s.state_dir),
                fstype=filesystem_type(s.state_dir),
                advice="SQLite locking is unreliable there; use a local state directory",
            )
        self._install_signals()  # before the store: a stop while waiting for it is honoured
        self.store = self._open_store()
        if self.store is None:  # asked to stop while waiting for the store
            self.lease.release()
            return 0
        self.slurm.store = self.store
        try:
            self._adopt_runs()
            self.slurm.start_worker()
            self._load_retries()
            self.scheduler.start()
            self.reconcile(startup=True)
            self._retry_adopted_failures()
            self.scanner.start()
            mode = self.watcher.start()
            log.info("watching", jobs_dir=str(s.jobs_dir), mode=mode)
            self.control.start()
            self.notifier.ready()
            self._notify_status()
            log.info("daemon_ready", jobs=len(self.jobs), invalid=len(self.orphan_errors))
            self._main_loop()
        finally:
            self._shutdown()
        return 0

    def _open_store(self) -> SQLiteStore | None:
        """Open the run store, waiting out a lock held by another process or a full disk
        (with backoff, shown in systemd's STATUS) instead of exiting; None if asked to stop
        meanwhile. A store of an unknown schema version is fatal: waiting will not fix it."""
        while True:
            try:
                store = SQLiteStore(self.settings.db_path)
            except StoreError as exc:
                if "schema version" in str(exc):
                    raise
                error: Exception = exc
            else:
                self.store_outage.recovered()
                return store
            delay = self.store_outage.failed(error)
            log.warning("store_unavailable", step="open", error=str(error), retry_in_s=delay)
            self.notifier.status(self.store_outage.summary() or "")
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:
                if self._stop_requested:
                    return None
                time.sleep(0.1)

    def _install_signals(self) -> None:
        # Handlers only set flags and wake the loop from a fresh thread: a queue.put from a
        # signal handler could deadlock on the queue's lock held by the interrupted get().
        def stop(signum: int, _frame: object) -> None:
            self._stop_requested = True
            threading.Thread(target=self.events.put, args=(("signal", signum),)).start()

        def reload(signum: int, _frame: object) -> None:
            self._reload_requested = True
            threading.Thread(target=self.events.put, args=(("signal", signum),)).start()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    def _main_loop(self) -> None:
        s = self.settings
        last_rescan = last_heartbeat = last_watchdog = time.monotonic()
        watchdog_every = self.notifier.watchdog_interval_s
        while not self._stop_requested:
            timeout = 0.25 if self.active else 1.0
            if watchdog_every:
                timeout = min(timeout, watchdog_every)
            try:
                event = self.events.get(timeout=timeout)
            except queue.Empty:
                event = None
            if event is not None:
                self._handle(event)
                # Coalesce a burst of 'changed' events into one reconcile.
                while True:
                    try:
                        self._handle(self.events.get_nowait())
                    except queue.Empty:
                        break
            if self._reload_requested:
                self._reload_requested = False
                self._step("reload", self._reload)
            now = time.monotonic()
            # Each step is guarded: one run's trouble, a locked or full store, a full disk
            # under the lease file never ends the loop (a lost lease does: _step re-raises it).
            if self.store_outage.retry_due():
                self._step("store_probe", self._probe_store)
            if not self.store_outage.active:
                self._step("poll_runs", self._poll_runs)
                self._step("dispatch_retries", self._dispatch_due_retries)
            if now - last_rescan >= s.rescan_interval_s:
                last_rescan = now
                self.scanner.request()
            if now - last_heartbeat >= s.heartbeat_s:
                last_heartbeat = now
                self._step("heartbeat", self._heartbeat)
            if watchdog_every and now - last_watchdog >= watchdog_every:
                last_watchdog = now
                self._step("watchdog", self.notifier.watchdog)
        self._drain()

    def _step(self, what: str, action: Any, *args: Any) -> bool:
        """Run one step of the loop; log any failure with context and go on. Returns whether
        it succeeded. A store that is unavailable starts (or extends) an outage."""
        try:
            action(*args)
        except LeaseHeldError:
            raise  # another daemon took over: stop scheduling at once
        except StoreUnavailableError as exc:
            self._store_failed(what, exc)
            return False
        except Exception:
            log.exception("daemon_step_failed", step=what)
            return False
        return True

    def _store_failed(
        self, what: str, exc: BaseException, retry: tuple[Any, ...] | None = None
    ) -> None:
        """Note a store failure: the outage backs off, and ``retry`` (an event) is kept to be
        handled again once the store answers."""
        delay = self.store_outage.failed(exc)
        if retry is not None and retry not in self._deferred:
            self._deferred.append(retry)
        log.warning(
            "store_unavailable",
            step=what,
            error=str(exc),
            retry_in_s=round(delay, 1),
            deferred=len(self._deferred),
        )
        self._notify_status()

    def _probe_store(self) -> None:
        """One small write: if it succeeds the outage is over and the kept work is done."""
        assert self.store is not None
        try:
            self.store.set_job_state("", "store_probe", utcnow().isoformat())
        except StoreUnavailableError as exc:
            delay = self.store_outage.failed(exc)
            log.warning("store_still_unavailable", error=str(exc), retry_in_s=round(delay, 1))
            self._notify_status()
            return
        was = self.store_outage.since
        self.store_outage.recovered()
        kept, self._deferred = self._deferred, []
        log.info(
            "store_recovered",
            unavailable_since=was.isoformat() if was else None,
            deferred=len(kept),
        )
        for job in sorted(self._retries_dirty):
            self._retries_dirty.discard(job)
            self._save_retries(job)
        for event in kept:
            self.events.put(event)
        if self._unapplied:
            self.events.put(("changed",))
        self._notify_status()

    def _heartbeat(self) -> None:
        """Renew the lease; a full or read-only disk under the lease file is logged and the
        next heartbeat tries again (the flock, not the file, is what excludes a second
        daemon)."""
        try:
            self.lease.heartbeat()
        except OSError as exc:
            log.warning("lease_heartbeat_failed", error=str(exc), lease=str(self.lease.lease_path))

    def _require_store(self) -> None:
        """Fail fast while the store is known to be unavailable (a write would wait out the
        busy timeout and block the loop, only to fail)."""
        if self.store_outage.active:
            raise StoreUnavailableError(
                f"the run store has been unavailable since "
                f"{self.store_outage.since.isoformat() if self.store_outage.since else '?'} "
                f"({self.store_outage.error}); nothing was recorded, try again later"
            )

    def _handle(self, event: tuple[Any, ...]) -> None:
        """Handle one event; whatever goes wrong is logged with context and the loop goes on.
        Work that needs the store while it is unavailable is kept for later (_deferred)."""
        kind = event[0]
        if kind == "control":
            self._handle_control(event)
            return
        if kind in STORE_EVENTS and self.store_outage.active:
            self._deferred.append(event)
            return
        try:
            if kind == "changed":
                self.reconcile()
            elif kind == "scanned":
                self.reconcile(outcome=event[1])
            elif kind == "fire":
                self._fire(event[1], event[2])
            elif kind == "dispatch":
                self.dispatch(event[1], event[2], **event[3])
            elif kind == "result":
                self._record_result(event[1])
        except StoreUnavailableError as exc:
            self._store_failed(kind, exc, retry=event if kind in STORE_EVENTS else None)
        except Exception:
            # Not `event=`: structlog's first argument is already called that.
            log.exception("event_failed", event_kind=kind, event_args=repr(event[1:])[:300])

    def _handle_control(self, event: tuple[Any, ...]) -> None:
        request, reply = event[1], event[2]
        ticket: _ControlTicket | None = event[3] if len(event) > 3 else None
        if ticket is not None:
            with ticket.lock:
                if ticket.abandoned:
                    log.warning("control_request_expired", op=request.get("op"))
                    return
                ticket.taken = True
        try:
            answer = self._control(request)
        except StoreUnavailableError as exc:
            answer = {"ok": False, "error": f"run store unavailable: {exc}"}
        except OrchestratorError as exc:
            answer = {"ok": False, "error": str(exc)}
        except Exception as exc:  # the client gets an answer, the loop goes on
            log.exception("control_request_failed", op=request.get("op"))
            answer = {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}
        reply.put(answer)

    def _reload(self) -> None:
        log.info("reloading")
        self.notifier.reloading()
        self.reconcile()
        self.notifier.ready()
        self._notify_status()

    def _drain(self) -> None:
        """Stop taking work, let local runs finish for up to the grace period, then cancel
        and record the rest (their shims kill each process group, TERM then KILL)."""
        self._draining = True
        self.notifier.stopping()
        self.scheduler.shutdown()
        self.watcher.stop()
        grace = self.settings.drain_grace_s

        # Slurm jobs live on in the cluster; the next daemon re-adopts them. Only local runs
        # (children of this machine) are drained.
        def local() -> list[RunRecord]:
            return [r for r in self.active.values() if r.executor != "slurm"]

        log.info("draining", active_runs=len(local()), grace_s=grace)
        deadline = time.monotonic() + grace
        while local() and time.monotonic() < deadline:
            time.sleep(0.2)
            self._poll_runs(allow_followups=False)
        self.slurm.stop_worker()
        if not local():
            return
        for run in local():
            log.warning("drain_cancelling", job=run.job, run_id=run.run_id)
            self._drain_cancelled.add(run.run_id)
            self._cancel_run(run)
        kill_wait = max(self._policy_grace(run.job) for run in local()) + 3.0
        deadline = time.monotonic() + kill_wait
        while local() and time.monotonic() < deadline:
            time.sleep(0.2)
            self._poll_runs(allow_followups=False)
        for run in local():
            self._finish(
                run,
                Outcome(
                    RunState.INTERRUPTED, None, "daemon stopped before the run ended", utcnow()
                ),
                allow_followups=False,
            )

    def _shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self.control.stop()
        with contextlib.suppress(Exception):
            self.scheduler.shutdown()
        with contextlib.suppress(Exception):
            self.watcher.stop()
        with contextlib.suppress(Exception):
            self.scanner.stop()
        with contextlib.suppress(Exception):
            self.slurm.stop_worker()
        if self.store is not None:
            self.store.close()
        self.lease.release()
        log.info("daemon_stopped")

    # ------------------------------------------------------------------ reconcile

    def reconcile(self, startup: bool = False, outcome: ScanOutcome | None = None) -> None:
        """Make the scheduled jobs match the valid manifests on disk (the desired state).

        ``outcome`` is a scan made by the scanner thread; without one the directory is scanned
        here (start-up and `reload`, whose callers wait for the result)."""
        t0 = time.perf_counter()
        previous_orphans = self.orphan_errors
        if outcome is None:
            outcome = self.scanner.scan_now()
        if outcome.scan is None:
            # Keep what runs; take no new instructions from a directory others can write,
            # that is missing, or that cannot be listed.
            if outcome.dir_error != self.dir_error:
                log.error(
                    "jobs_dir_missing" if outcome.dir_missing else "jobs_dir_refused",
                    jobs_dir=str(self.settings.jobs_dir),
                    error=outcome.dir_error,
                )
            self.dir_error = outcome.dir_error
            self._notify_status()
            return
        self.dir_error = None
        scan = outcome.scan
        desired = self._desired(scan)
        old = self.jobs
        # The new desired state is in effect before any run starts, so that a catch-up or
        # on-change run dispatched below finds its job.
        self.jobs = desired
        self.orphan_errors = {
            p: e for p, e in scan.invalid.items() if not any(v.path == p for v in desired.values())
        }
        for name in sorted(set(old) - set(desired)):
            self._guarded(self._remove_job, old[name])
        for name, view in sorted(desired.items()):
            before = old.get(name)
            if view.error is not None and (
                before is None or before.error is None or str(before.error) != str(view.error)
            ):
                log.error("manifest_invalid_keeping_last_good", job=name, error=str(view.error))
            if before is None or before.loaded is None or name in self._unapplied:
                applied = self._guarded(self._add_job, view, startup)
            elif view.loaded is not None and before.loaded.content_hash != view.loaded.content_hash:
                applied = self._guarded(self._change_job, before, view)
            else:
                continue
            # A job whose schedule could not be applied (the store was locked) is applied
            # again by a later reconcile, instead of being taken as done.
            if applied:
                self._unapplied.discard(name)
            else:
                self._unapplied.add(name)
        self._unapplied &= set(desired)
        for path, err in self.orphan_errors.items():
            if path not in previous_orphans or str(previous_orphans[path]) != str(err):
                log.error("manifest_invalid", path=str(path), error=str(err))
        self.scanner.set_owners({name: view.path for name, view in desired.items()})
        self._notify_status()
        log.debug("reconciled", jobs=len(desired), seconds=round(time.perf_counter() - t0, 4))

    def _guarded(self, action: Any, *args: Any) -> bool:
        """One job's trouble (a failed dispatch, a store error) never stops the others;
        returns whether the action succeeded (the same guard as a loop step)."""
        return self._step(action.__name__, action, *args)

    def _desired(self, scan: DirectoryScan) -> dict[str, JobView]:
        desired = {name: JobView(lm.path, lm) for name, lm in scan.valid.items()}
        # An invalid edit of a file whose job is known keeps the last known good version.
        for path, err in scan.invalid.items():
            for name, view in self.jobs.items():
                if view.path == path and name not in desired and view.loaded is not None:
                    desired[name] = JobView(path, view.loaded, err)
        # A file still being written (invalid, changed moments ago) changes nothing yet: its
        # job stays as it is until the file has settled and is read again.
        for path in scan.unsettled:
            for name, view in self.jobs.items():
                if view.path == path and name not in desired:
                    desired[name] = view
        return desired

    def _add_job(self, view: JobView, startup: bool) -> None:
        assert view.loaded is not None and self.store is not None
        self._require_store()
        name = view.name
        manifest = view.loaded.manifest
        log.info("job_added", job=name, path=str(view.path), kind=manifest.kind)
        self._apply_schedule(view, startup=startup)
        if isinstance(manifest.schedule, ChangeSchedule) and not manifest.suspend:
            self._maybe_change_run(view)

    def _change_job(self, before: JobView, view: JobView) -> None:
        assert before.loaded is not None and view.loaded is not None
        self._require_store()
        name = view.name
        same_schedule = _schedule_signature(before.loaded) == _schedule_signature(view.loaded)
        log.info("job_changed", job=name, schedule_changed=not same_schedule)
        if not same_schedule:
            self._apply_schedule(view, startup=False)
        manifest = view.loaded.manifest
        if isinstance(manifest.schedule, ChangeSchedule) and not manifest.suspend:
            self._maybe_change_run(view)

    def _remove_job(self, view: JobView) -> None:
        name = view.name
        self.scheduler.unschedule(name)
        self.retries = [r for r in self.retries if r.job != name]
        heapq.heapify(self.retries)
        if self.store is not None:
            self._save_retries(name)  # a removed job's retry must not come back on restart
        policy = view.loaded.manifest.policy if view.loaded else None
        active = [r for r in self.active.values() if r.job == name]
        log.info("job_removed", job=name, active_runs=len(active))
        if policy is not None and policy.on_remove == "cancel":
            for run in active:
                self._cancel_run(run)

    def _apply_schedule(self, view: JobView, startup: bool) -> None:
        """(Re)schedule a job; on start-up, first settle the fires missed while down."""
        assert view.loaded is not None and self.store is not None
        name = view.name
        manifest = view.loaded.manifest
        sig = _schedule_signature(view.loaded)
        schedule = manifest.schedule
        if manifest.suspend or not isinstance(schedule, CronSchedule | EverySchedule):
            self.scheduler.unschedule(name)
            self.store.set_job_state(name, "schedule_sig", sig)
            self.store.set_job_state(name, "scheduled_through", None)
            if manifest.suspend:
                log.info("job_suspended", job=name)
            return
        now = utcnow()
        stored_sig = self.store.get_job_state(name, "schedule_sig")
        anchor_raw = self.store.get_job_state(name, "anchor")
        if stored_sig == sig and anchor_raw:
            anchor = datetime.fromisoformat(anchor_raw)
            if startup:
                self._catch_up(view, schedule, anchor, now)
        else:
            # A new or changed schedule counts from now: nothing before it was missed.
            anchor = now
            self.store.set_job_state(name, "anchor", anchor.isoformat())
            self.store.set_job_state(name, "schedule_sig", sig)
            self.store.set_job_state(name, "scheduled_through", now.isoformat())
        # Fires up to `now` were settled above (caught up, recorded missed, or none: a new
        # schedule); the scheduler starts strictly after it, so none falls in between.
        nxt = self.scheduler.schedule(name, schedule, anchor=anchor, after=now)
        log.info("job_scheduled", job=name, next_run=nxt.isoformat() if nxt else None)

    def _catch_up(
        self, view: JobView, schedule: CronSchedule | EverySchedule, anchor: datetime, now: datetime
    ) -> None:
        assert view.loaded is not None and self.store is not None
        name = view.name
        through_raw = self.store.get_job_state(name, "scheduled_through")
        if not through_raw:
            self.store.set_job_state(name, "scheduled_through", now.isoformat())
            return
        through = datetime.fromisoformat(through_raw)
        # A fire whose run was recorded is not missed even if the daemon died before it
        # could advance scheduled_through (crash between the two writes).
        recent = [
            r.scheduled_for
            for r in self.store.history(name, limit=20)
            if r.scheduled_for is not None and r.trigger in (Trigger.SCHEDULE, Trigger.CATCHUP)
        ]
        if recent and max(recent) > through:
            through = max(recent)
        misses = fire_times_between(schedule, through, now, start=anchor, limit=MAX_MISSED_RECORDS)
        if not misses:
            self.store.set_job_state(name, "scheduled_through", now.isoformat())
            return
        window = schedule.catchup
        newest = misses[-1]
        caught_up = window is not None and (now - newest).total_seconds() <= window
        manifest_hash = view.loaded.content_hash
        for missed in misses[:-1] if caught_up else misses:
            self.store.record_missed(
                name, manifest_hash, missed, "daemon was not running when this run was due"
            )
        log.warning(
            "runs_missed",
            job=name,
            missed=len(misses) - (1 if caught_up else 0),
            catching_up=newest.isoformat() if caught_up else None,
        )
        if caught_up:
            self.dispatch(name, Trigger.CATCHUP, scheduled_for=newest)
        # Last: a crash before this point leaves the misses to be settled again on the next
        # start, and the records made so far (`recent` above) keep them from being doubled.
        self.store.set_job_state(name, "scheduled_through", now.isoformat())

    def _maybe_change_run(self, view: JobView) -> None:
        assert view.loaded is not None and self.store is not None
        name = view.name
        if self.store.get_job_state(name, "last_change_hash") == view.loaded.content_hash:
            return
        self.store.set_job_state(name, "last_change_hash", view.loaded.content_hash)
        self.dispatch(name, Trigger.CHANGE)

    # ------------------------------------------------------------------ runs

    def _on_fire(self, job: str, fire_times: list[datetime]) -> None:
        """Called on APScheduler's thread: hand the fire to the main loop."""
        self.events.put(("fire", job, fire_times))

    def _fire(self, job: str, fire_times: list[datetime]) -> None:
        """Run the newest due fire; older ones (the process was frozen or starved for longer
        than an interval) are recorded missed, as fires missed while the daemon was down."""
        assert self.store is not None
        view = self.jobs.get(job)
        if view is None or view.loaded is None:
            return
        *older, scheduled_for = fire_times
        if older:
            # Idempotent: this event may be handled again after a store outage.
            recorded = {r.scheduled_for for r in self.store.history(job, limit=len(older) + 20)}
            for missed in older:
                if missed not in recorded:
                    self.store.record_missed(
                        job,
                        view.loaded.content_hash,
                        missed,
                        "the daemon could not run on time (frozen or overloaded)",
                    )
            log.warning("runs_missed", job=job, missed=len(older), reason="daemon_late")
        self.dispatch(job, Trigger.SCHEDULE, scheduled_for=scheduled_for)
        # The run is recorded: failing to note the fire must not make the event run again
        # (catch-up also counts recorded runs as fired).
        try:
            self.store.set_job_state(job, "scheduled_through", scheduled_for.isoformat())
        except StoreUnavailableError as exc:
            self._store_failed("scheduled_through", exc)

    def dispatch(
        self,
        job: str,
        trigger: Trigger,
        scheduled_for: datetime | None = None,
        attempt: int = 1,
        retry_of: str | None = None,
        array: str | None = None,
        after_token: bool = False,
    ) -> RunRecord | None:
        """Start a run of ``job`` subject to its concurrency policy; returns the run record
        (None when the policy skipped it). The record exists before the process does."""
        assert self.store is not None
        view = self.jobs.get(job)
        if view is None or view.loaded is None:
            raise OrchestratorError(f"no job named {job!r}")
        self._require_store()
        manifest = view.loaded.manifest
        bound = log.bind(job=job, trigger=str(trigger))
        short = self._token_too_short(job, manifest.requires, manifest.policy.timeout)
        if short is not None and after_token:
            # The token job just ran and the token is still too short (e.g. renewal needs a
            # passphrase): do not loop; the token job's own run says why.
            bound.error("run_blocked_by_token", token_job=short[0], reason=short[1])
            return None
        if short is not None:
            token_job, reason = short
            bound.warning("run_deferred_for_token", token_job=token_job, reason=reason)
            self.waiting_for_token[job] = (token_job, trigger)
            if not any(r.job == token_job for r in self.active.values()):
                self._dispatch_or_defer(token_job, Trigger.AFTER)
            if trigger == Trigger.MANUAL:
                raise DeferredError(
                    f"job {job!r} waits for token job {token_job!r}: {reason}; it starts once "
                    "the token is renewed"
                )
            return None
        running = [r for r in self.active.values() if r.job == job]
        if running and manifest.policy.concurrency == "forbid":
            bound.warning("run_skipped_concurrency", active_run=running[0].run_id, policy="forbid")
            if trigger == Trigger.MANUAL:
                raise OrchestratorError(
                    f"job {job!r} already has run {running[0].run_id} active "
                    "(policy.concurrency: forbid)"
                )
            return None
        slurm_opts = (
            manifest.executor.slurm if isinstance(manifest.executor, SlurmExecutorSpec) else None
        )
        if (
            slurm_opts is not None
            and slurm_opts.max_queued is not None
            and len(running) >= slurm_opts.max_queued
        ):
            bound.warning("run_skipped_max_queued", max_queued=slurm_opts.max_queued)
            if trigger == Trigger.MANUAL:
                raise OrchestratorError(
                    f"job {job!r} has {len(running)} runs queued or running "
                    f"(executor.slurm.max_queued: {slurm_opts.max_queued})"
                )
            return None
        if running and manifest.policy.concurrency == "replace":
            for run in running:
                bound.info("run_replaced", replaced_run=run.run_id)
                self._cancel_run(run)
        record = self.store.create_run(
            job,
            view.loaded.content_hash,
            str(trigger),
            attempt=attempt,
            scheduled_for=scheduled_for,
            executor="slurm" if slurm_opts is not None else "local",
            retry_of=retry_of,
        )
        # A Slurm run's directory must be visible to compute nodes: the spool directory.
        runs_root = self.settings.slurm_spool_dir if slurm_opts else self.settings.runs_dir
        run_dir = runs_root / record.run_id
        effective_array = array if array is not None else (slurm_opts.array if slurm_opts else None)
        log_path = run_dir / ("output-%a.log" if effective_array else "output.log")
        bound = bound.bind(run_id=record.run_id, attempt=attempt)
        try:
            make_run_dir(run_dir)  # 0700, in a 0700 runs/ or Slurm spool directory
            self.store.set_run_paths(record.run_id, str(run_dir), str(log_path))
            invocation = build_invocation(
                manifest, record.run_id, run_dir=run_dir, state_dir=self.settings.state_dir
            )
            spec = RunSpec(
                run_id=record.run_id,
                argv=invocation.argv,
                env=invocation.env,
                workdir=invocation.workdir,
                timeout_s=manifest.policy.timeout,
                kill_grace_s=manifest.policy.kill_grace,
                run_dir=run_dir,
                log_path=log_path,
                job=job,
                attempt=attempt,
                options=slurm_opts,
                array=array,
                env_overrides=invocation.env_overrides,
            )
            if slurm_opts is not None:
                self.slurm.start(spec)
                handle = None
            else:
                handle = self.executor.start(spec)
        except Exception as exc:
            # ExecutorError, OSError, or a command that cannot be rendered (ValueError from a
            # container mount path): the record exists, so it must end, and nothing else stops.
            bound.error("run_start_failed", error=str(exc), error_type=type(exc).__name__)
            try:
                self.store.finish_run(
                    record.run_id,
                    RunState.FAILED,
                    exit_code=None,
                    message=f"could not start: {exc}",
                )
            except StoreUnavailableError as store_exc:
                # The record stays active: polling finds no shim and records it lost (then
                # retried per policy) once the store answers; never a second record here.
                self.active[record.run_id] = dataclasses.replace(record, run_dir=str(run_dir))
                self._store_failed("dispatch", store_exc)
                return None
            self._after_finish(job, record.run_id, RunState.FAILED, attempt)
            return self.store.get_run(record.run_id)
        # From here the process exists: whatever the store says, the run is followed.
        started = dataclasses.replace(
            record,
            run_dir=str(run_dir),
            log_path=str(log_path),
            state=RunState.RUNNING if handle is not None else record.state,
            pid=handle.pid if handle is not None else None,
            pid_start_time=handle.pid_start_time if handle is not None else None,
        )
        try:
            if handle is not None:
                self.store.mark_running(record.run_id, handle.pid, handle.pid_start_time)
            started = self.store.get_run(record.run_id) or started
        except StoreUnavailableError as exc:
            self._store_failed("mark_running", exc)
        self.active[record.run_id] = started
        if handle is not None:
            bound.info("run_started", pid=handle.pid, argv=invocation.argv)
        else:
            bound.info("run_queued_for_slurm", argv=invocation.argv, array=effective_array)
        self._notify_status()
        return started

    def _poll_runs(self, allow_followups: bool = True) -> None:
        slurm_runs = [r for r in self.active.values() if r.executor == "slurm"]
        if slurm_runs:
            for run_id, slurm_outcome in self.slurm.poll_many(slurm_runs).items():
                slurm_run = self.active.get(run_id)
                if slurm_run is not None:
                    self._finish(slurm_run, slurm_outcome, allow_followups=allow_followups)
        for run in list(self.active.values()):
            if run.executor == "slurm":
                continue
            try:
                outcome = self.executor.poll(run)
            except Exception:
                log.exception("run_poll_failed", job=run.job, run_id=run.run_id)
                continue
            if outcome is not None:
                self._finish(run, outcome, allow_followups=allow_followups)

    def _finish(self, run: RunRecord, outcome: Outcome, allow_followups: bool = True) -> None:
        assert self.store is not None
        if run.run_id in self._drain_cancelled and outcome.state == RunState.CANCELLED:
            # The daemon stopped it, not a person: 'interrupted', retried by the next daemon
            # when the policy has retries.
            outcome = dataclasses.replace(
                outcome,
                state=RunState.INTERRUPTED,
                message="interrupted: the daemon stopped before the run ended",
            )
        # The intent first: a crash between recording the end and storing its retry or
        # starting its `after` jobs would otherwise lose them; the next daemon finds the mark
        # and does what is left (_retry_adopted_failures). If the store fails here the run
        # stays active and the next poll records it.
        self._mark_followups(run.job, run.run_id)
        changed = self.store.finish_run(
            run.run_id,
            outcome.state,
            exit_code=outcome.exit_code,
            message=outcome.message,
            finished_at=outcome.finished_at,
        )
        self.active.pop(run.run_id, None)
        if not changed:
            self._clear_followups(run.job, run.run_id)
            return
        try:
            self._record_result(run)
        except StoreUnavailableError as exc:
            self._store_failed("record_result", exc, retry=("result", run))
        log.info(
            "run_finished",
            job=run.job,
            run_id=run.run_id,
            state=str(outcome.state),
            exit_code=outcome.exit_code,
            message=outcome.message,
        )
        if allow_followups:
            self._after_finish(run.job, run.run_id, outcome.state, run.attempt)
            self._clear_followups(run.job, run.run_id)
        elif self._draining:
            # Start nothing while stopping, but keep the retry the policy asks for: it is
            # stored, and the next daemon runs it.
            self._after_finish(run.job, run.run_id, outcome.state, run.attempt, start_runs=False)
            self._clear_followups(run.job, run.run_id)
        # else: found ended at start-up; the mark stays until the manifests are loaded.
        self._step("prune", self._prune, run.job)
        self._notify_status()

    def _mark_followups(self, job: str, run_id: str) -> None:
        assert self.store is not None
        pending = list(self.store.get_job_state(job, FOLLOWUPS_KEY) or [])
        if run_id not in pending:
            self.store.set_job_state(job, FOLLOWUPS_KEY, [*pending, run_id])

    def _clear_followups(self, job: str, run_id: str) -> None:
        """The run's follow-ups are done (or stored). A failure to clear the mark is harmless:
        the next daemon sees the retry or `after` run exists and does not do it twice."""
        assert self.store is not None
        try:
            pending = [r for r in self.store.get_job_state(job, FOLLOWUPS_KEY) or [] if r != run_id]
            self.store.set_job_state(job, FOLLOWUPS_KEY, pending or None)
        except StoreUnavailableError as exc:
            self._store_failed("clear_followups", exc)

    def _record_result(self, run: RunRecord) -> None:
        """A task's structured result (tag promoted, token expiry, hosts done); its one-line
        `summary` says more than "exit code 1". Idempotent: redone after a store outage."""
        assert self.store is not None
        result = read_task_result(Path(run.run_dir)) if run.run_dir else None
        if result is not None:
            self.store.update_result(run.run_id, result)
            summary = result.get("summary")
            if isinstance(summary, str) and summary:
                self.store.set_message(run.run_id, summary)

    # Clients treat a token with less than 600 s left as invalid (JAliEn; /shared/notes/hpc.md).
    TOKEN_MARGIN_S = 600.0

    def _token_too_short(
        self, job: str, requires: list[str], timeout_s: float
    ) -> tuple[str, str] | None:
        """The first required token job whose token would expire before this run's timeout
        ends, with the reason; None when every token lasts long enough."""
        assert self.store is not None
        for token_job in requires:
            if token_job not in self.jobs:
                log.error("requires_unknown_job", job=job, token_job=token_job)
                continue
            not_after = None
            for run in self.store.history(token_job, limit=20):
                value = (run.result or {}).get("not_after")
                if not value:
                    continue
                try:
                    parsed = datetime.fromisoformat(str(value))
                except ValueError:
                    log.warning("token_result_unreadable", token_job=token_job, not_after=value)
                    continue
                # A time without a zone is read as UTC, as the token tools print it.
                not_after = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
                break
            needed = utcnow() + timedelta(seconds=timeout_s + self.TOKEN_MARGIN_S)
            if not_after is None:
                return token_job, "no token expiry known yet"
            if not_after < needed:
                return token_job, f"token expires {not_after.isoformat()}, before the run could end"
        return None

    def _release_token_waiters(self, token_job: str, succeeded: bool) -> None:
        for job, (needed, trigger) in list(self.waiting_for_token.items()):
            if needed != token_job:
                continue
            del self.waiting_for_token[job]
            if not succeeded:
                log.error("run_blocked_by_token", job=job, token_job=token_job)
                continue
            try:
                self._dispatch_or_defer(job, trigger, after_token=True)
            except OrchestratorError as exc:
                log.error("deferred_run_failed", job=job, error=str(exc))

    def _after_finish(
        self,
        job: str,
        run_id: str,
        state: RunState,
        attempt: int,
        start_runs: bool = True,
        recovering: bool = False,
    ) -> None:
        """Follow-ups of a finished run: `after` triggers, token waiters, retries. With
        ``start_runs`` False (draining) only a retry is scheduled (and stored). With
        ``recovering`` (a previous daemon may have done part of them before it died) a retry
        or `after` run that exists already is not made again."""
        if start_runs and any(needed == job for needed, _ in self.waiting_for_token.values()):
            self._release_token_waiters(job, state == RunState.SUCCEEDED)
        view = self.jobs.get(job)
        if view is None or view.loaded is None:
            return
        policy = view.loaded.manifest.policy
        if view.loaded.manifest.suspend:
            # A suspended job does nothing in the background: a run a person started by hand
            # is neither retried nor followed by its `after` jobs (here, or after a restart).
            if state != RunState.SUCCEEDED and attempt <= policy.retries:
                log.info("retry_skipped_suspended", job=job, run_id=run_id)
            elif state == RunState.SUCCEEDED and self._after_jobs(job):
                log.info("after_skipped_suspended", job=job, run_id=run_id)
            return
        if state == RunState.SUCCEEDED:
            if not start_runs:
                # Stopping: the `after` triggers of this success are stored, and the next
                # daemon starts them (_retry_adopted_failures).
                assert self.store is not None
                try:
                    pending = list(self.store.get_job_state(job, "pending_after") or [])
                    self.store.set_job_state(job, "pending_after", [*pending, run_id])
                except StoreUnavailableError as exc:
                    log.error("after_triggers_lost_store_unavailable", job=job, error=str(exc))
                return
            done_after = self._after_runs_since(run_id) if recovering else set()
            for other in self._after_jobs(job):
                if other in done_after:
                    continue
                try:
                    self._dispatch_or_defer(other, Trigger.AFTER)
                except OrchestratorError as exc:
                    log.error("after_trigger_failed", job=other, error=str(exc))
        elif state in RETRYABLE and attempt <= policy.retries:
            if recovering and (
                any(r.retry_of == run_id for r in self.retries)
                or self._retry_already_ran(job, run_id, attempt + 1)
            ):
                return
            delay = retry_delay_s(policy.retry_backoff.base, policy.retry_backoff.max, attempt)
            # Saturates: the models bound every duration, but a due time past datetime's
            # range must never raise on the event path.
            delay = min(delay, MAX_RETRY_DELAY_S)
            retry = _Retry(
                utcnow() + timedelta(seconds=delay),
                job,
                attempt + 1,
                run_id,
                array=self._failed_tasks_array(job, run_id),
            )
            heapq.heappush(self.retries, retry)
            self._save_retries(job)
            log.info("retry_scheduled", job=job, run_id=run_id, attempt=attempt + 1, delay_s=delay)

    def _after_runs_since(self, run_id: str) -> set[str]:
        """Jobs with an `after` run created since run ``run_id`` ended (for recovery)."""
        assert self.store is not None
        run = self.store.get_run(run_id)
        if run is None or run.finished_at is None:
            return set()
        return {
            r.job
            for r in self.store.history(None, limit=200)
            if r.trigger == Trigger.AFTER and r.created_at >= run.finished_at
        }

    def _after_jobs(self, job: str) -> list[str]:
        """The jobs that a success of ``job`` triggers (`after:`), suspended ones left out."""
        return [
            other.name
            for other in sorted(self.jobs.values(), key=lambda v: v.name)
            if other.loaded
            and job in other.loaded.manifest.after
            and not other.loaded.manifest.suspend
        ]

    def _dispatch_or_defer(self, job: str, trigger: Trigger, **kwargs: Any) -> None:
        """Dispatch a follow-up run; if the store is unavailable, keep it until it is back."""
        try:
            self.dispatch(job, trigger, **kwargs)
        except StoreUnavailableError as exc:
            self._store_failed("dispatch", exc, retry=("dispatch", job, trigger, kwargs))

    def _dispatch_due_retries(self) -> None:
        now = utcnow()
        while self.retries and self.retries[0].due <= now:
            retry = heapq.heappop(self.retries)
            # Dispatch first, then forget the stored retry: a crash in between leaves a retry
            # whose run exists, which _load_retries recognises (by retry_of) and drops.
            view = self.jobs.get(retry.job)
            if view is not None and view.loaded is not None and view.loaded.manifest.suspend:
                log.info("retry_dropped_suspended", job=retry.job, retry_of=retry.retry_of)
            elif view is not None:
                try:
                    self.dispatch(
                        retry.job,
                        Trigger.RETRY,
                        attempt=retry.attempt,
                        retry_of=retry.retry_of,
                        array=retry.array,
                    )
                except StoreUnavailableError as exc:
                    # Kept, still due: dispatched as soon as the store answers.
                    heapq.heappush(self.retries, retry)
                    self._store_failed("retry", exc)
                    return
                except OrchestratorError as exc:
                    log.error("retry_failed", job=retry.job, error=str(exc))
            self._save_retries(retry.job)

    def pending_retries(self, job: str) -> list[dict[str, Any]]:
        """The retries waiting for ``job``, soonest first (for status and describe)."""
        return [
            {
                "due": r.due.isoformat(),
                "attempt": r.attempt,
                "retry_of": r.retry_of,
                "array": r.array,
            }
            for r in sorted(self.retries)
            if r.job == job
        ]

    def _drop_retry(self, run_id: str) -> _Retry | None:
        """Forget the pending retry of run ``run_id`` (``cancel`` on a failed run)."""
        for retry in self.retries:
            if retry.retry_of == run_id:
                self.retries.remove(retry)
                heapq.heapify(self.retries)
                self._save_retries(retry.job)
                log.info("retry_cancelled", job=retry.job, retry_of=run_id, attempt=retry.attempt)
                return retry
        return None

    def _save_retries(self, job: str) -> None:
        """Store every pending retry of ``job`` (a job may have several: concurrency allow, or
        a scheduled run that failed while an earlier failure waited for its retry)."""
        assert self.store is not None
        pending = self.pending_retries(job)
        try:
            self.store.set_job_state(job, "retry", pending or None)
        except StoreUnavailableError as exc:
            # The retries are in memory; they are stored again once the store answers.
            self._retries_dirty.add(job)
            self._store_failed("save_retries", exc)

    def _load_retries(self) -> None:
        assert self.store is not None
        for job, value in self.store.all_job_state("retry").items():
            # One retry (a dict) as earlier versions stored it, or a list of them.
            for item in [value] if isinstance(value, dict) else value or []:
                if self._retry_already_ran(job, item["retry_of"], int(item["attempt"])):
                    continue
                heapq.heappush(
                    self.retries,
                    _Retry(
                        datetime.fromisoformat(item["due"]),
                        job,
                        int(item["attempt"]),
                        item["retry_of"],
                        item.get("array"),
                    ),
                )

    def _retry_already_ran(self, job: str, retry_of: str, attempt: int) -> bool:
        assert self.store is not None
        return any(
            r.retry_of == retry_of and r.attempt == attempt
            for r in self.store.history(job, limit=200)
        )

    def _failed_tasks_array(self, job: str, run_id: str) -> str | None:
        """For a Slurm array run: an array spec of the tasks that did not succeed, with the
        manifest's throttle, so that a retry runs those tasks alone."""
        assert self.store is not None
        try:
            run = self.store.get_run(run_id)
        except StoreUnavailableError as exc:
            log.warning("failed_tasks_unknown_retrying_all", job=job, run_id=run_id, error=str(exc))
            return None
        tasks = (run.result or {}).get("tasks") if run else None
        if not tasks:
            return None
        failed = sorted(int(t) for t, r in tasks.items() if r.get("state") != "succeeded")
        if not failed:
            return None
        view = self.jobs.get(job)
        throttle = None
        if view and view.loaded and isinstance(view.loaded.manifest.executor, SlurmExecutorSpec):
            spec = view.loaded.manifest.executor.slurm.array or ""
            throttle = spec.partition("%")[2] or None
        return ",".join(map(str, failed)) + (f"%{throttle}" if throttle else "")

    def _cancel_run(self, run: RunRecord) -> None:
        try:
            if run.executor == "slurm":
                self.slurm.cancel(run)
                return
            self.executor.cancel(run)
        except Exception:
            log.exception("run_cancel_failed", job=run.job, run_id=run.run_id)

    def _policy_grace(self, job: str) -> float:
        view = self.jobs.get(job)
        if view is None or view.loaded is None:
            return 10.0
        return view.loaded.manifest.policy.kill_grace

    def _prune(self, job: str) -> None:
        assert self.store is not None
        view = self.jobs.get(job)
        keep = view.loaded.manifest.policy.history if view and view.loaded else None
        if keep is None:
            return
        for old in self.store.prune(job, keep):
            if old.run_dir and Path(old.run_dir).parent == self.settings.runs_dir:
                shutil.rmtree(old.run_dir, ignore_errors=True)

    def _adopt_runs(self) -> None:
        """Follow runs a previous daemon left behind: alive -> keep following; ended with a
        result file -> its real outcome; gone without one -> lost (retried per policy)."""
        assert self.store is not None
        for run in self.store.active_runs():
            # A run still 'pending' was recorded but the daemon died before noting its pid;
            # the executor finds the shim from the shim.json it wrote, if it started at all.
            # A Slurm run is handed to the Slurm executor, which reconciles it with the cluster.
            outcome = self.slurm.adopt(run) if run.executor == "slurm" else self.executor.poll(run)
            if outcome is None:
                self.active[run.run_id] = run
                log.info("run_adopted", job=run.job, run_id=run.run_id, pid=run.pid)
                continue
            # Ended while no daemon ran: recorded like any end (its task result too); retries
            # wait until the manifests are loaded (_retry_adopted_failures).
            log.info("run_adopted_finished", job=run.job, run_id=run.run_id)
            self._finish(run, outcome, allow_followups=False)

    def _retry_adopted_failures(self) -> None:
        """Runs found ended at start-up get their follow-ups once the manifests are loaded (the
        policy lives there): lost or failed ones are retried per policy, and succeeded ones
        trigger the jobs that name them in `after`."""
        assert self.store is not None
        # Runs whose end was recorded but whose follow-ups may not have been done: found ended
        # at start-up, or the previous daemon died between recording an end and its retry.
        for job, run_ids in self.store.all_job_state(FOLLOWUPS_KEY).items():
            for run_id in run_ids or []:
                stored = self.store.get_run(run_id)
                if stored is not None and RunState(stored.state) in ACTIVE_STATES:
                    continue  # still followed; its end will be handled then
                if stored is not None:
                    if not stored.result:
                        self._step("record_result", self._record_result, stored)
                    args = (job, run_id, RunState(stored.state), stored.attempt, True, True)
                    if not self._guarded(self._after_finish, *args):
                        continue
                self._clear_followups(job, run_id)
        for job, run_ids in self.store.all_job_state("pending_after").items():
            for run_id in run_ids or []:
                stored = self.store.get_run(run_id)
                if stored is not None:
                    args = (job, run_id, RunState(stored.state), stored.attempt, True, True)
                    self._guarded(self._after_finish, *args)
            self.store.set_job_state(job, "pending_after", None)

    # ------------------------------------------------------------------ status & control

    def _notify_status(self) -> None:
        invalid = sum(1 for v in self.jobs.values() if v.error) + len(self.orphan_errors)
        text = f"{len(self.jobs)} jobs, {len(self.active)} running, {invalid} invalid manifests"
        if self.slurm.breaker.open:
            text += f"; Slurm submission paused: {self.slurm.breaker.last_error}"
        store_problem = self.store_outage.summary()
        if store_problem:
            text = f"{store_problem}; {text}"
        if self.dir_error:
            text = f"jobs directory refused: {self.dir_error}"
        elif invalid:
            first = next(
                (str(v.error) for v in self.jobs.values() if v.error),
                str(next(iter(self.orphan_errors.values()), "")),
            )
            text += f"; {first.splitlines()[0]}"
        self.notifier.status(text)

    def status(self) -> dict[str, Any]:
        assert self.store is not None
        rows = []
        store_read_error: str | None = None
        for name, view in sorted(self.jobs.items()):
            last: RunRecord | None = None
            if store_read_error is None:
                try:
                    last = self.store.last_run(name)
                except StoreUnavailableError as exc:
                    # Status answers without the last runs rather than not at all.
                    store_read_error = str(exc)
            row = job_row(
                view,
                self.scheduler.next_fire_time(name),
                last,
                [r for r in self.active.values() if r.job == name],
            )
            row["pending_retries"] = self.pending_retries(name)
            rows.append(row)
        for path, err in sorted(self.orphan_errors.items()):
            rows.append(job_row(JobView(path, None, err), None, None, []))
        return {
            "daemon": {
                "running": True,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started_at": self.started_at.isoformat(),
                "jobs_dir": str(self.settings.jobs_dir),
                "state_dir": str(self.settings.state_dir),
                "watch_mode": self.watcher.mode,
                "jobs_dir_error": self.dir_error,
                "active_runs": len(self.active),
                "slurm": self.slurm.health(),
                "store": {
                    **self.store_outage.as_dict(),
                    "deferred_events": len(self._deferred),
                    "read_error": store_read_error,
                },
            },
            "jobs": rows,
        }

    CONTROL_REPLY_TIMEOUT_S = 10.0

    def _on_control(self, request: dict[str, Any]) -> dict[str, Any]:
        """Called on a control-socket thread: hand over to the main loop and wait. A request
        the main loop has not taken when the wait ends is withdrawn, so that "busy; try again"
        never leaves a trigger or cancel to happen later as well."""
        reply: queue.Queue[dict[str, Any]] = queue.Queue()
        ticket = _ControlTicket()
        self.events.put(("control", request, reply, ticket))
        try:
            return reply.get(timeout=self.CONTROL_REPLY_TIMEOUT_S)
        except queue.Empty:
            pass
        with ticket.lock:
            if not ticket.taken:
                ticket.abandoned = True
                return {"ok": False, "error": "the daemon is busy; try again"}
        try:  # the main loop is answering it right now
            return reply.get(timeout=self.CONTROL_REPLY_TIMEOUT_S)
        except queue.Empty:
            return {"ok": False, "error": "the daemon took too long to answer; see its log"}

    def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "status":
            return {"ok": True, "status": self.status()}
        if op == "reload":
            self._reload()
            return {"ok": True}
        if op == "trigger":
            job = str(request.get("job", ""))
            view = self.jobs.get(job)
            if view is None:
                known = ", ".join(sorted(self.jobs)) or "none"
                raise OrchestratorError(f"no job named {job!r}; known jobs: {known}")
            try:
                record = self.dispatch(job, Trigger.MANUAL)
            except DeferredError as exc:
                return {"ok": True, "run_id": None, "deferred": str(exc)}
            assert record is not None
            return {"ok": True, "run_id": record.run_id, "state": str(record.state)}
        if op == "cancel":
            run_id = str(request.get("run_id", ""))
            run = self.active.get(run_id)
            if run is None:
                dropped = self._drop_retry(run_id)
                if dropped is not None:
                    return {
                        "ok": True,
                        "run_id": run_id,
                        "retry_dropped": {"job": dropped.job, "attempt": dropped.attempt},
                    }
                assert self.store is not None
                record_found = self.store.get_run(run_id)
                if record_found is None:
                    raise OrchestratorError(f"no run with id {run_id!r}")
                raise OrchestratorError(f"run {run_id} is not active (state {record_found.state})")
            self._cancel_run(run)
            return {"ok": True, "run_id": run_id}
        raise OrchestratorError(f"unknown request {op!r}")
