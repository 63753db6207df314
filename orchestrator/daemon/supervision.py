"""Runs from start to end: admit, record, start on the job's executor, follow, record the end.

The run record exists (``pending``) before its process does; from the moment the process
exists, the run is followed whatever the store says; a run's end is recorded once (the
store's ``finish_run``) and its follow-ups are marked before that (:mod:`.followups`).
"""

from __future__ import annotations

import dataclasses
import shutil
from datetime import datetime
from pathlib import Path

import structlog

from orchestrator.clock import utcnow
from orchestrator.errors import OrchestratorError, StoreUnavailableError
from orchestrator.executors.base import Outcome
from orchestrator.statedir import make_run_dir
from orchestrator.store.base import RunRecord, RunState, Trigger
from orchestrator.tasks.base import build_invocation, run_spec
from orchestrator.tasks.python_task import read_task_result

from . import admission, slots
from .events import Result
from .followups import FollowUps
from .state import Shared

log = structlog.get_logger("orchestrator.daemon")


class DeferredError(OrchestratorError):
    """A manual trigger that will run later (it waits for a job it requires)."""


class Runs:
    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.followups = FollowUps(shared, self.dispatch)
        self.slots = slots.Slots(shared)  # runs waiting for a capped executor's free slot
        # Local runs the drain cancelled: recorded 'interrupted' (retried by the next daemon
        # per policy), not 'cancelled' (which means a person or a policy asked for it).
        self.drain_cancelled: set[str] = set()

    # ------------------------------------------------------------ start

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
        """Start a run of ``job`` if admission allows; returns the run record (None when it
        was skipped or deferred). ``after_token``: the run waited for a job it requires,
        which has just run. Raises for a manual trigger that does not start now."""
        shared = self.shared
        view = shared.jobs.get(job)
        if view is None or view.loaded is None:
            raise OrchestratorError(f"no job named {job!r}")
        store = shared.require_store()
        manifest = view.loaded.manifest
        executor = shared.executors[manifest.executor_name]
        options = manifest.executor_options
        bound = log.bind(job=job, trigger=str(trigger))
        running = [r for r in shared.active.values() if r.job == job]
        decision = admission.admit(
            job=job,
            trigger=trigger,
            concurrency=manifest.policy.concurrency,
            max_active=executor.max_active(options),
            active=running,
            unmet=self._unmet(job, manifest.requires, manifest.policy.timeout),
            after_required=after_token,
        )
        if not isinstance(decision, admission.Start):
            self._not_started(job, trigger, decision, bound)
            return None
        if not decision.replace and slots.full(shared, executor):
            queued = self.slots.wait(
                job, executor, trigger, scheduled_for, attempt, retry_of, array, after_token
            )
            if trigger == Trigger.MANUAL:
                cap = getattr(executor, "capacity", None)
                raise DeferredError(
                    f"job {job!r} waits for a free {executor.name} slot ({cap} runs at most at "
                    "once); it starts when one ends"
                    if queued
                    else f"job {job!r} already waits for a free {executor.name} slot"
                )
            return None
        for run in decision.replace:
            bound.info("run_replaced", replaced_run=run.run_id)
            self.cancel(run)
        record = store.create_run(
            job,
            view.loaded.content_hash,
            str(trigger),
            attempt=attempt,
            scheduled_for=scheduled_for,
            executor=executor.name,
            retry_of=retry_of,
        )
        runs_root = executor.runs_root or shared.settings.runs_dir
        run_dir = runs_root / record.run_id
        log_path = run_dir / executor.log_name(options, array)
        bound = bound.bind(run_id=record.run_id, attempt=attempt)
        try:
            make_run_dir(run_dir)  # 0700, in a 0700 runs/ or spool directory
            store.set_run_paths(record.run_id, str(run_dir), str(log_path))
            invocation = build_invocation(
                manifest, record.run_id, run_dir=run_dir, state_dir=shared.settings.state_dir
            )
            spec = run_spec(manifest, invocation, record.run_id, run_dir, log_path, attempt, array)
            handle = executor.start(spec)
        except Exception as exc:
            # ExecutorError, OSError, or a command that cannot be rendered (ValueError from a
            # container mount path): the record exists, so it must end, and nothing else stops.
            bound.error("run_start_failed", error=str(exc), error_type=type(exc).__name__)
            try:
                store.finish_run(
                    record.run_id,
                    RunState.FAILED,
                    exit_code=None,
                    message=f"could not start: {exc}",
                )
            except StoreUnavailableError as store_exc:
                # The record stays active: polling finds no shim and records it lost (then
                # retried per policy) once the store answers; never a second record here.
                shared.active[record.run_id] = dataclasses.replace(record, run_dir=str(run_dir))
                shared.store_failed("dispatch", store_exc)
                return None
            self.followups.after_finish(job, record.run_id, RunState.FAILED, attempt)
            return store.get_run(record.run_id)
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
                store.mark_running(record.run_id, handle.pid, handle.pid_start_time)
            started = store.get_run(record.run_id) or started
        except StoreUnavailableError as exc:
            shared.store_failed("mark_running", exc)
        shared.active[record.run_id] = started
        if handle is not None:
            bound.info("run_started", pid=handle.pid, argv=invocation.argv)
        else:
            bound.info("run_queued", executor=executor.name, argv=invocation.argv, array=array)
        shared.notify_status()
        return started

    def _not_started(
        self,
        job: str,
        trigger: Trigger,
        decision: admission.Skip | admission.Defer,
        bound: structlog.stdlib.BoundLogger,
    ) -> None:
        """Log why; a deferred run waits for its required job (started unless it runs); a
        person who asked is told (raises)."""
        if isinstance(decision, admission.Defer):
            required = decision.required_job
            bound.warning(
                "run_deferred_for_required_job", required_job=required, reason=decision.reason
            )
            self.followups.wait_for(job, required, trigger)
            if not any(r.job == required for r in self.shared.active.values()):
                self.followups.dispatch_or_keep(required, Trigger.AFTER)
            if trigger == Trigger.MANUAL:
                raise DeferredError(
                    f"job {job!r} waits for required job {required!r}: "
                    f"{decision.reason}; it starts once that job has run"
                )
            return
        blocked = decision.event == "run_blocked_by_required_job"
        (bound.error if blocked else bound.warning)(decision.event, **dict(decision.detail))
        # a run that waited for its required job is not asked again: that job's run says why
        if trigger == Trigger.MANUAL and not blocked:
            raise OrchestratorError(decision.message)

    def _unmet(self, job: str, requires: list[str], timeout_s: float) -> admission.Unmet | None:
        """The first required job whose published validity would end before this run could."""
        known: dict[str, datetime | None] = {}
        for required in requires:
            if required not in self.shared.jobs:
                log.error("requires_unknown_job", job=job, required_job=required)
                continue
            until = admission.valid_until(self.shared.store.history(required, limit=20))
            if isinstance(until, str):
                log.warning("valid_until_unreadable", required_job=required, valid_until=until)
                until = None
            known[required] = until
        return admission.first_unmet(requires, known, utcnow(), timeout_s)

    # ------------------------------------------------------------ follow

    def poll(self, allow_followups: bool = True) -> None:
        """Record the end of every active run that has ended."""
        by_executor: dict[str, list[RunRecord]] = {}
        for run in self.shared.active.values():
            by_executor.setdefault(run.executor or "local", []).append(run)
        for name, runs in by_executor.items():
            for run_id, outcome in self.shared.executors[name].poll_many(runs).items():
                ended = self.shared.active.get(run_id)
                if ended is not None:
                    self.finish(ended, outcome, allow_followups=allow_followups)

    def finish(self, run: RunRecord, outcome: Outcome, allow_followups: bool = True) -> None:
        shared = self.shared
        store = shared.store
        if run.run_id in self.drain_cancelled and outcome.state == RunState.CANCELLED:
            # The daemon stopped it, not a person: 'interrupted', retried by the next daemon
            # when the policy has retries.
            outcome = dataclasses.replace(
                outcome,
                state=RunState.INTERRUPTED,
                message="interrupted: the daemon stopped before the run ended",
            )
        # The intent first: a crash between recording the end and storing its retry or
        # starting its `after` jobs would otherwise lose them; the next daemon finds the mark
        # and does what is left (FollowUps.recover). If the store fails here the run stays
        # active and the next poll records it.
        self.followups.mark(run.job, run.run_id)
        changed = store.finish_run(
            run.run_id,
            outcome.state,
            exit_code=outcome.exit_code,
            message=outcome.message,
            finished_at=outcome.finished_at,
            result={"usage": outcome.usage} if outcome.usage else None,
        )
        shared.active.pop(run.run_id, None)
        if not changed:
            self.followups.clear(run.job, run.run_id)
            return
        try:
            self.record_result(run)
        except StoreUnavailableError as exc:
            shared.store_failed("record_result", exc, retry=Result(run))
        log.info(
            "run_finished",
            job=run.job,
            run_id=run.run_id,
            state=str(outcome.state),
            exit_code=outcome.exit_code,
            message=outcome.message,
        )
        if allow_followups:
            self.followups.after_finish(run.job, run.run_id, outcome.state, run.attempt)
            self.followups.clear(run.job, run.run_id)
        elif shared.draining:
            # Start nothing while stopping, but keep the retry the policy asks for: it is
            # stored, and the next daemon runs it.
            self.followups.after_finish(
                run.job, run.run_id, outcome.state, run.attempt, start_runs=False
            )
            self.followups.clear(run.job, run.run_id)
        # else: found ended at start-up; the mark stays until the manifests are loaded.
        shared.step("prune", self.prune, run.job)
        if allow_followups or shared.draining:
            shared.run_ended(run.job)
        shared.notify_status()

    def record_result(self, run: RunRecord) -> None:
        """A task's structured result (tag promoted, token expiry, hosts done); its one-line
        `summary` says more than "exit code 1". Idempotent: redone after a store outage."""
        result = read_task_result(Path(run.run_dir)) if run.run_dir else None
        if result is not None:
            store = self.shared.store
            store.update_result(run.run_id, result)
            summary = result.get("summary")
            if isinstance(summary, str) and summary:
                store.set_message(run.run_id, summary)

    def cancel(self, run: RunRecord) -> None:
        try:
            self.shared.executor_of(run).cancel(run)
        except Exception:
            log.exception("run_cancel_failed", job=run.job, run_id=run.run_id)

    def prune(self, job: str) -> None:
        view = self.shared.jobs.get(job)
        keep = view.loaded.manifest.policy.history if view and view.loaded else None
        if keep is None:
            return
        for old in self.shared.store.prune(job, keep):
            if old.run_dir and Path(old.run_dir).parent == self.shared.settings.runs_dir:
                shutil.rmtree(old.run_dir, ignore_errors=True)

    def adopt(self) -> None:
        """Follow runs a previous daemon left behind: alive -> keep following; ended with a
        result -> its real outcome; gone without one -> lost (retried per policy)."""
        for run in self.shared.store.active_runs():
            # A run still 'pending' was recorded but the daemon died before noting its pid;
            # its executor finds it from what it wrote (shim.json, the batch job's tag).
            outcome = self.shared.executor_of(run).adopt(run)
            if outcome is None:
                self.shared.active[run.run_id] = run
                log.info("run_adopted", job=run.job, run_id=run.run_id, pid=run.pid)
                continue
            # Ended while no daemon ran: recorded like any end (its task result too); retries
            # wait until the manifests are loaded (FollowUps.recover).
            log.info("run_adopted_finished", job=run.job, run_id=run.run_id)
            self.finish(run, outcome, allow_followups=False)

    # ------------------------------------------------------------ stop

    def draining_runs(self) -> list[RunRecord]:
        """Active runs that end with the daemon (batch jobs go on, and are adopted later)."""
        return [
            r for r in self.shared.active.values() if not self.shared.executor_of(r).outlives_daemon
        ]

    def policy_grace(self, job: str) -> float:
        view = self.shared.jobs.get(job)
        if view is None or view.loaded is None:
            return 10.0
        return view.loaded.manifest.policy.kill_grace
