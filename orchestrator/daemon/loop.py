"""The daemon: start-up, one plain event loop, drain and shutdown.

All run state changes happen on the main thread, which consumes one queue of typed events
(:mod:`.events`). Other threads only post events: the scanner (``Scanned``), APScheduler
(``Fire``), the control socket (``Control``) and signal handlers (``Signal``). Between events
the loop ticks (at most once a second when idle, every 0.25 s while runs are active) to follow
runs, start due retries, probe an unavailable store, rescan, renew the lease and feed the
systemd watchdog. What each event means is decided in a module named for it: reconcile,
admission, supervision, follow-ups, control.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import threading
import time
from typing import Any

import structlog

from orchestrator.clock import utcnow
from orchestrator.control import ControlServer
from orchestrator.errors import StoreError, StoreUnavailableError
from orchestrator.executors import registry
from orchestrator.executors.base import Executor, Outcome
from orchestrator.fsinfo import filesystem_type, is_network_filesystem
from orchestrator.lease import Lease
from orchestrator.manifests.loader import check_permissions
from orchestrator.manifests.watch import DirectoryWatcher
from orchestrator.scanner import Scanner
from orchestrator.scheduling.scheduler import Scheduler
from orchestrator.sdnotify import Notifier
from orchestrator.settings import Settings
from orchestrator.statedir import prepare_state_dir
from orchestrator.store.base import RunState, Store
from orchestrator.store.sqlite import SQLiteStore

from .control import ControlHandler
from .events import (
    NEEDS_STORE,
    Control,
    Dispatch,
    Event,
    Fire,
    Rescan,
    Result,
    Scanned,
    Signal,
)
from .operations import Operations, systemd_status
from .reconcile import Reconciler
from .state import Shared
from .supervision import Runs

log = structlog.get_logger("orchestrator.daemon")


def default_executors(settings: Settings) -> dict[str, Executor]:
    """The executors a daemon runs with (:mod:`orchestrator.executors.registry`)."""
    return registry.build(settings)


class Daemon:
    """One daemon per state directory (the lease enforces it)."""

    def __init__(self, settings: Settings, executors: dict[str, Executor] | None = None) -> None:
        self.settings = settings
        self.shared = Shared(settings, executors or default_executors(settings))
        self.shared.notify_status = self._notify_status
        self.started_at = utcnow()
        self._stop_requested = False
        self._reload_requested = False
        self.notifier = Notifier.from_env()
        self.lease = Lease(settings.state_dir, heartbeat_s=settings.heartbeat_s)
        self.scheduler = Scheduler(
            lambda job, times: self.shared.events.put(Fire(job, tuple(times)))
        )
        # Manifests are read off the main loop (a huge or hung file must not stall it).
        self.scanner = Scanner(
            settings.jobs_dir,
            lambda outcome: self.shared.events.put(Scanned(outcome)),
            settle_s=settings.settle_s,
        )
        self.watcher = DirectoryWatcher(
            settings.jobs_dir,
            self.scanner.request,
            debounce_s=settings.debounce_s,
            force_polling=settings.force_polling,
        )
        self.runs = Runs(self.shared)
        self.reconciler = Reconciler(self.shared, self.runs, self.scheduler, self.scanner)
        self.control_handler = ControlHandler(
            self.shared, self.runs, self.scheduler, self._reload, self._describe
        )
        self.control = ControlServer(settings.control_socket, self.control_handler.on_request)
        self.operations = Operations(self.shared, self.control_handler, self._retry_pending)
        self.shared.run_ended = self.operations.run_ended

    @property
    def events(self) -> queue.Queue[Event]:
        return self.shared.events

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the process exit code."""
        s = self.settings
        prepare_state_dir(s)  # the state dir and runs/: ours, 0700
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
                advice="POSIX locks work here (checked), the run store uses a rollback journal "
                "(no WAL); one daemon at a time (the lease). See systemd/README.md",
            )
        self._install_signals()  # before the store: a stop while waiting for it is honoured
        store = self._open_store()
        if store is None:  # asked to stop while waiting for the store
            self.lease.release()
            return 0
        self.shared.store_ = store
        try:
            self.runs.adopt()
            for executor in self.shared.executors.values():
                executor.open(store)
            self.runs.followups.load()
            self.runs.slots.load()
            self.shared.paused = {
                job: v for job, v in store.all_job_state("paused").items() if isinstance(v, dict)
            }
            self.scheduler.start()
            self.reconciler.reconcile(startup=True)
            self.runs.followups.recover(self.runs.record_result)
            self.operations.start()
            self.scanner.start()
            mode = self.watcher.start()
            log.info("watching", jobs_dir=str(s.jobs_dir), mode=mode)
            self.control.start()
            self.notifier.ready()
            self._notify_status()
            log.info(
                "daemon_ready", jobs=len(self.shared.jobs), invalid=len(self.shared.orphan_errors)
            )
            self._main_loop()
        finally:
            self._shutdown()
        return 0

    def _open_store(self) -> Store | None:
        """Open the run store, waiting out a lock held by another process or a full disk
        (with backoff, shown in systemd's STATUS) instead of exiting; None if asked to stop
        meanwhile. A store of an unknown schema version is fatal: waiting will not fix it."""
        outage = self.shared.outage
        while True:
            try:
                store = SQLiteStore(self.settings.db_path)
            except StoreError as exc:
                if "schema version" in str(exc):
                    raise
                error: Exception = exc
            else:
                outage.recovered()
                return store
            delay = outage.failed(error)
            log.warning("store_unavailable", step="open", error=str(error), retry_in_s=delay)
            self.notifier.status(outage.summary() or "")
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
            threading.Thread(target=self.events.put, args=(Signal(signum),)).start()

        def reload(signum: int, _frame: object) -> None:
            self._reload_requested = True
            threading.Thread(target=self.events.put, args=(Signal(signum),)).start()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    def _main_loop(self) -> None:
        s, shared = self.settings, self.shared
        last_rescan = last_heartbeat = last_watchdog = time.monotonic()
        watchdog_every = self.notifier.watchdog_interval_s
        while not self._stop_requested:
            timeout = 0.25 if shared.active else 1.0
            if watchdog_every:
                timeout = min(timeout, watchdog_every)
            try:
                event: Event | None = self.events.get(timeout=timeout)
            except queue.Empty:
                event = None
            while event is not None:  # a burst of events is handled before the next tick
                self._handle(event)
                try:
                    event = self.events.get_nowait()
                except queue.Empty:
                    event = None
            if self._reload_requested:
                self._reload_requested = False
                shared.step("reload", self._reload)
            now = time.monotonic()
            # Each step is guarded: one run's trouble, a locked or full store, a full disk
            # under the lease file never ends the loop (a lost lease does: step re-raises it).
            if shared.outage.retry_due():
                shared.step("store_probe", self._probe_store)
            if not shared.outage.active:
                shared.step("poll_runs", self.runs.poll)
                shared.step("dispatch_retries", self.runs.followups.dispatch_due)
                shared.step("dispatch_waiting", self.runs.slots.release, self.runs.dispatch)
            if now - last_rescan >= s.rescan_interval_s:
                last_rescan = now
                self.scanner.request()
            if now - last_heartbeat >= s.heartbeat_s:
                last_heartbeat = now
                shared.step("heartbeat", self._heartbeat)
            if watchdog_every and now - last_watchdog >= watchdog_every:
                last_watchdog = now
                shared.step("watchdog", self.notifier.watchdog)
        self._drain()

    def _handle(self, event: Event) -> None:
        """Handle one event; whatever goes wrong is logged with context and the loop goes on.
        Work that needs the store while it is unavailable is kept for later."""
        shared = self.shared
        if isinstance(event, Control):
            self.control_handler.handle(event)
            return
        if isinstance(event, NEEDS_STORE) and shared.outage.active:
            shared.deferred.append(event)
            return
        kind = type(event).__name__.lower()
        try:
            match event:
                case Rescan():
                    self.reconciler.reconcile()
                case Scanned(outcome=outcome):
                    self.reconciler.reconcile(outcome=outcome)
                case Fire(job=job, fire_times=times):
                    self.reconciler.fire(job, times)
                case Dispatch(job=job, trigger=trigger, after_token=after_token):
                    self.runs.dispatch(job, trigger, after_token=after_token)
                case Result(run=run):
                    self.runs.record_result(run)
                case Signal():
                    pass  # the handler set its flag; this only woke the loop
        except StoreUnavailableError as exc:
            shared.store_failed(kind, exc, retry=event if isinstance(event, NEEDS_STORE) else None)
        except Exception:
            # Not `event=`: structlog's first argument is already called that.
            log.exception("event_failed", event_kind=kind, event_args=repr(event)[:300])

    def _probe_store(self) -> None:
        """One small write: if it succeeds the outage is over and the kept work is done."""
        shared = self.shared
        try:
            shared.store.set_job_state("", "store_probe", utcnow().isoformat())
        except StoreUnavailableError as exc:
            delay = shared.outage.failed(exc)
            log.warning("store_still_unavailable", error=str(exc), retry_in_s=round(delay, 1))
            self._notify_status()
            return
        was = shared.outage.since
        shared.outage.recovered()
        kept, shared.deferred = shared.deferred, []
        log.info(
            "store_recovered",
            unavailable_since=was.isoformat() if was else None,
            deferred=len(kept),
        )
        self.runs.followups.save_unsaved()
        for event in kept:
            self.events.put(event)
        if self.reconciler.unapplied:
            self.events.put(Rescan())
        self._notify_status()

    def _heartbeat(self) -> None:
        """Renew the lease; a full or read-only disk under the lease file is logged and the
        next heartbeat tries again (the flock, not the file, is what excludes a second
        daemon). Then notifications due without a run (overdue) and the metrics textfile."""
        try:
            self.lease.heartbeat()
        except OSError as exc:
            log.warning("lease_heartbeat_failed", error=str(exc), lease=str(self.lease.lease_path))
        self.operations.heartbeat()

    def _reload(self) -> None:
        log.info("reloading")
        self.notifier.reloading()
        self.reconciler.reconcile()
        self.operations.refresh_config()
        self.notifier.ready()
        self._notify_status()

    def _drain(self) -> None:
        """Stop taking work, let local runs finish for up to the grace period, then cancel
        and record the rest (their shims kill each process group, TERM then KILL). Runs of
        executors whose runs outlive the daemon (batch jobs) go on; the next daemon adopts
        them."""
        self.shared.draining = True
        self.notifier.stopping()
        self.scheduler.shutdown()
        self.watcher.stop()
        grace = self.settings.drain_grace_s
        draining = self.runs.draining_runs
        log.info("draining", active_runs=len(draining()), grace_s=grace)
        deadline = time.monotonic() + grace
        while draining() and time.monotonic() < deadline:
            time.sleep(0.2)
            self.runs.poll(allow_followups=False)
        for executor in self.shared.executors.values():
            if executor.outlives_daemon:
                executor.close()
        if not draining():
            return
        for run in draining():
            log.warning("drain_cancelling", job=run.job, run_id=run.run_id)
            self.runs.drain_cancelled.add(run.run_id)
            self.runs.cancel(run)
        kill_wait = max(self.runs.policy_grace(run.job) for run in draining()) + 3.0
        deadline = time.monotonic() + kill_wait
        while draining() and time.monotonic() < deadline:
            time.sleep(0.2)
            self.runs.poll(allow_followups=False)
        for run in draining():
            self.runs.finish(
                run,
                Outcome(
                    RunState.INTERRUPTED, None, "daemon stopped before the run ended", utcnow()
                ),
                allow_followups=False,
            )

    def _shutdown(self) -> None:
        for stop in (
            self.control.stop,
            self.scheduler.shutdown,
            self.watcher.stop,
            self.operations.stop,
        ):
            with contextlib.suppress(Exception):
                stop()
        with contextlib.suppress(Exception):
            self.scanner.stop()
        for executor in self.shared.executors.values():
            with contextlib.suppress(Exception):
                executor.close()
        if self.shared.store_ is not None:
            self.shared.store_.close()
        self.lease.release()
        log.info("daemon_stopped")

    # ------------------------------------------------------------------ status

    def _describe(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at.isoformat(),
            "watch_mode": self.watcher.mode,
            **self.operations.status(),
        }

    def _retry_pending(self, job: str, run_id: str) -> bool:
        """A retry of the run is to come or under way: its outcome is the job's, not this."""
        return any(r.retry_of == run_id for r in self.runs.followups.retries) or any(
            r.retry_of == run_id for r in self.shared.active.values()
        )

    def _notify_status(self) -> None:
        self.notifier.status(systemd_status(self.shared, len(self.runs.slots.queue)))
