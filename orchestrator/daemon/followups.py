"""What a finished run sets going: its retry (per policy), the jobs that run ``after`` it, the
runs that waited for it (``requires:``). Durable: a retry is stored until its run exists, and
a run's follow-ups are marked before its end is recorded, so that a daemon that dies in between
leaves them to the next one (:meth:`FollowUps.recover`), which does none of them twice.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from orchestrator.clock import utcnow
from orchestrator.errors import OrchestratorError, StoreUnavailableError
from orchestrator.scheduling.triggers import retry_delay_s
from orchestrator.store.base import ACTIVE_STATES, RunRecord, RunState, Trigger

from .events import Dispatch
from .state import Shared

log = structlog.get_logger("orchestrator.daemon")

# job_state key: runs whose end is recorded but whose follow-ups (retry, `after`) may not be
# done yet; written before the end is recorded, cleared once they are.
FOLLOWUPS_KEY = "followups_pending"
# job_state key: successes whose `after` runs a stopping daemon left to the next one.
PENDING_AFTER_KEY = "pending_after"
# The longest wait before a retry, whatever the policy says (a year; models bound it too).
MAX_RETRY_DELAY_S = 366 * 86400.0
RETRYABLE = {RunState.FAILED, RunState.TIMED_OUT, RunState.LOST, RunState.INTERRUPTED}

# dispatch(job, trigger, **options) -> the run record, or None when it did not start
DispatchFn = Callable[..., RunRecord | None]


@dataclass(order=True)
class PendingRetry:
    due: datetime
    job: str = field(compare=False)
    attempt: int = field(compare=False)
    retry_of: str = field(compare=False)
    array: str | None = field(default=None, compare=False)  # failed array tasks only


class FollowUps:
    def __init__(self, shared: Shared, dispatch: DispatchFn) -> None:
        self.shared = shared
        self.dispatch = dispatch
        self.retries: list[PendingRetry] = []  # a heap, soonest first
        # job -> (the job it waits for, the trigger it was due with): runs deferred by
        # `requires:` until that job has run.
        self.waiting: dict[str, tuple[str, Trigger]] = {}
        self.unsaved: set[str] = set()  # jobs whose retries the store did not take

    # ------------------------------------------------------------ the durable mark

    def mark(self, job: str, run_id: str) -> None:
        store = self.shared.store
        pending = list(store.get_job_state(job, FOLLOWUPS_KEY) or [])
        if run_id not in pending:
            store.set_job_state(job, FOLLOWUPS_KEY, [*pending, run_id])

    def clear(self, job: str, run_id: str) -> None:
        """The run's follow-ups are done (or stored). A failure to clear the mark is harmless:
        the next daemon sees the retry or `after` run exists and does not do it twice."""
        store = self.shared.store
        try:
            pending = [r for r in store.get_job_state(job, FOLLOWUPS_KEY) or [] if r != run_id]
            store.set_job_state(job, FOLLOWUPS_KEY, pending or None)
        except StoreUnavailableError as exc:
            self.shared.store_failed("clear_followups", exc)

    # ------------------------------------------------------------ after a run ends

    def after_finish(
        self,
        job: str,
        run_id: str,
        state: RunState,
        attempt: int,
        start_runs: bool = True,
        recovering: bool = False,
    ) -> None:
        """Follow-ups of a finished run: `after` triggers, waiting runs, retries. With
        ``start_runs`` False (draining) only a retry is scheduled (and stored). With
        ``recovering`` (a previous daemon may have done part of them before it died) a retry
        or `after` run that exists already is not made again."""
        if start_runs and any(needed == job for needed, _ in self.waiting.values()):
            self.release_waiting(job, state == RunState.SUCCEEDED)
        view = self.shared.jobs.get(job)
        if view is None or view.loaded is None:
            return
        manifest = view.loaded.manifest
        policy = manifest.policy
        if manifest.suspend:
            # A suspended job does nothing in the background: a run a person started by hand
            # is neither retried nor followed by its `after` jobs (here, or after a restart).
            if state != RunState.SUCCEEDED and attempt <= policy.retries:
                log.info("retry_skipped_suspended", job=job, run_id=run_id)
            elif state == RunState.SUCCEEDED and self.after_jobs(job):
                log.info("after_skipped_suspended", job=job, run_id=run_id)
            return
        if state == RunState.SUCCEEDED:
            self._after_success(job, run_id, start_runs, recovering)
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
            retry = PendingRetry(
                utcnow() + timedelta(seconds=delay),
                job,
                attempt + 1,
                run_id,
                array=self._retry_array(job, run_id),
            )
            heapq.heappush(self.retries, retry)
            self.save(job)
            log.info("retry_scheduled", job=job, run_id=run_id, attempt=attempt + 1, delay_s=delay)

    def _after_success(self, job: str, run_id: str, start_runs: bool, recovering: bool) -> None:
        if not start_runs:
            # Stopping: the `after` triggers of this success are stored, and the next daemon
            # starts them (recover).
            store = self.shared.store
            try:
                pending = list(store.get_job_state(job, PENDING_AFTER_KEY) or [])
                store.set_job_state(job, PENDING_AFTER_KEY, [*pending, run_id])
            except StoreUnavailableError as exc:
                log.error("after_triggers_lost_store_unavailable", job=job, error=str(exc))
            return
        done_after = self._after_runs_since(run_id) if recovering else set()
        for other in self.after_jobs(job):
            if other in done_after:
                continue
            try:
                self.dispatch_or_keep(other, Trigger.AFTER)
            except OrchestratorError as exc:
                log.error("after_trigger_failed", job=other, error=str(exc))

    def after_jobs(self, job: str) -> list[str]:
        """The jobs that a success of ``job`` triggers (`after:`), suspended ones left out."""
        return [
            other.name
            for other in sorted(self.shared.jobs.values(), key=lambda v: v.name)
            if other.loaded
            and job in other.loaded.manifest.after
            and not other.loaded.manifest.suspend
        ]

    def _after_runs_since(self, run_id: str) -> set[str]:
        """Jobs with an `after` run created since run ``run_id`` ended (for recovery)."""
        store = self.shared.store
        run = store.get_run(run_id)
        if run is None or run.finished_at is None:
            return set()
        return {
            r.job
            for r in store.history(None, limit=200)
            if r.trigger == Trigger.AFTER and r.created_at >= run.finished_at
        }

    def dispatch_or_keep(self, job: str, trigger: Trigger, after_token: bool = False) -> None:
        """Start a follow-up run; if the store is unavailable, keep it until it is back."""
        try:
            self.dispatch(job, trigger, after_token=after_token)
        except StoreUnavailableError as exc:
            self.shared.store_failed("dispatch", exc, retry=Dispatch(job, trigger, after_token))

    # ------------------------------------------------------------ requires:

    def wait_for(self, job: str, required: str, trigger: Trigger) -> None:
        self.waiting[job] = (required, trigger)

    def release_waiting(self, required: str, succeeded: bool) -> None:
        for job, (needed, trigger) in list(self.waiting.items()):
            if needed != required:
                continue
            del self.waiting[job]
            if not succeeded:
                log.error("run_blocked_by_required_job", job=job, required_job=required)
                continue
            try:
                self.dispatch_or_keep(job, trigger, after_token=True)
            except OrchestratorError as exc:
                log.error("deferred_run_failed", job=job, error=str(exc))

    # ------------------------------------------------------------ retries

    def _retry_array(self, job: str, run_id: str) -> str | None:
        """For a run of several tasks: the tasks its retry runs (the executor decides)."""
        try:
            run = self.shared.store.get_run(run_id)
        except StoreUnavailableError as exc:
            log.warning("failed_tasks_unknown_retrying_all", job=job, run_id=run_id, error=str(exc))
            return None
        if run is None:
            return None
        view = self.shared.jobs.get(job)
        options = view.loaded.manifest.executor_options if view and view.loaded else None
        return self.shared.executor_of(run).retry_array(options, run.result)

    def dispatch_due(self) -> None:
        """Start the retries that are due (dropped for a job suspended meanwhile)."""
        now = utcnow()
        while self.retries and self.retries[0].due <= now:
            retry = heapq.heappop(self.retries)
            # Dispatch first, then forget the stored retry: a crash in between leaves a retry
            # whose run exists, which load() recognises (by retry_of) and drops.
            view = self.shared.jobs.get(retry.job)
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
                    self.shared.store_failed("retry", exc)
                    return
                except OrchestratorError as exc:
                    log.error("retry_failed", job=retry.job, error=str(exc))
            self.save(retry.job)

    def pending(self, job: str) -> list[dict[str, Any]]:
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

    def drop(self, run_id: str) -> PendingRetry | None:
        """Forget the pending retry of run ``run_id`` (``cancel`` on a failed run)."""
        for retry in self.retries:
            if retry.retry_of == run_id:
                self.retries.remove(retry)
                heapq.heapify(self.retries)
                self.save(retry.job)
                log.info("retry_cancelled", job=retry.job, retry_of=run_id, attempt=retry.attempt)
                return retry
        return None

    def forget_job(self, job: str) -> None:
        """A removed job's retries go, in memory and in the store (never back on restart)."""
        self.retries = [r for r in self.retries if r.job != job]
        heapq.heapify(self.retries)
        self.save(job)

    def save(self, job: str) -> None:
        """Store every pending retry of ``job`` (a job may have several: concurrency allow, or
        a scheduled run that failed while an earlier failure waited for its retry)."""
        pending = self.pending(job)
        try:
            self.shared.store.set_job_state(job, "retry", pending or None)
        except StoreUnavailableError as exc:
            # The retries are in memory; they are stored again once the store answers.
            self.unsaved.add(job)
            self.shared.store_failed("save_retries", exc)

    def save_unsaved(self) -> None:
        for job in sorted(self.unsaved):
            self.unsaved.discard(job)
            self.save(job)

    def load(self) -> None:
        for job, value in self.shared.store.all_job_state("retry").items():
            # One retry (a dict) as earlier versions stored it, or a list of them.
            for item in [value] if isinstance(value, dict) else value or []:
                if self._retry_already_ran(job, item["retry_of"], int(item["attempt"])):
                    continue
                heapq.heappush(
                    self.retries,
                    PendingRetry(
                        datetime.fromisoformat(item["due"]),
                        job,
                        int(item["attempt"]),
                        item["retry_of"],
                        item.get("array"),
                    ),
                )

    def _retry_already_ran(self, job: str, retry_of: str, attempt: int) -> bool:
        return any(
            r.retry_of == retry_of and r.attempt == attempt
            for r in self.shared.store.history(job, limit=200)
        )

    # ------------------------------------------------------------ after a restart

    def recover(self, record_result: Callable[[RunRecord], None]) -> None:
        """Runs found ended at start-up get their follow-ups once the manifests are loaded
        (the policy lives there): lost or failed ones are retried per policy, and succeeded
        ones trigger the jobs that name them in `after`; so do runs whose end a previous
        daemon recorded but whose follow-ups it may not have done (the mark)."""
        store = self.shared.store
        for job, run_ids in store.all_job_state(FOLLOWUPS_KEY).items():
            for run_id in run_ids or []:
                stored = store.get_run(run_id)
                if stored is not None and RunState(stored.state) in ACTIVE_STATES:
                    continue  # still followed; its end will be handled then
                if stored is not None:
                    if not stored.result:
                        self.shared.step("record_result", record_result, stored)
                    args = (job, run_id, RunState(stored.state), stored.attempt, True, True)
                    if not self.shared.guarded(self.after_finish, *args):
                        continue
                self.clear(job, run_id)
        for job, run_ids in store.all_job_state(PENDING_AFTER_KEY).items():
            for run_id in run_ids or []:
                stored = store.get_run(run_id)
                if stored is not None:
                    args = (job, run_id, RunState(stored.state), stored.attempt, True, True)
                    self.shared.guarded(self.after_finish, *args)
            store.set_job_state(job, PENDING_AFTER_KEY, None)
