"""The submitting half of the Slurm executor: its worker thread's loop, the plan step of a run
that plans its own array, sbatch with the look-up by tag after an ambiguous failure, scancel.
Runs on the executor's worker thread only (:class:`~orchestrator.executors.slurm.executor.
SlurmExecutor` inherits it, with :mod:`.fallback` and :mod:`.polling`).
"""

from __future__ import annotations

import threading
import time

import structlog

from orchestrator.clock import utcnow
from orchestrator.executors.base import Outcome, RunSpec
from orchestrator.executors.slurm.commands import SlurmCommandError
from orchestrator.executors.slurm.fallback import Fallback
from orchestrator.executors.slurm.planning import PlanError, plan_array
from orchestrator.executors.slurm.render import job_tag
from orchestrator.executors.slurm.tracked import TrackedRun
from orchestrator.store.base import RunState

log = structlog.get_logger("orchestrator.slurm")


class Submission(Fallback):
    """Worker-thread steps; the executor sets these attributes up."""

    submit_backoff_max_s: float
    _plans: dict[str, RunSpec]
    _wake: threading.Event
    _stop: threading.Event

    def _render_and_queue(self, spec: RunSpec, array_override: str | None) -> None:
        raise NotImplementedError

    def _plan(self, t: TrackedRun) -> None:
        """The plan step (worker thread): the array, then the script and the submission; a
        failed plan ends the run ``failed`` with the planner's reason."""
        with self._lock:
            spec = self._plans.pop(t.run_id, None)
        if spec is None:
            return
        if t.cancel_requested:
            self._finish(
                t, Outcome(RunState.CANCELLED, None, "cancelled before planning", utcnow())
            )
            return
        try:
            array = plan_array(spec)
        except PlanError as exc:
            log.warning("slurm_plan_failed", run_id=t.run_id, job=t.job, error=str(exc))
            self._finish(t, Outcome(RunState.FAILED, None, str(exc), utcnow()))
            return
        log.info("slurm_run_planned", run_id=t.run_id, job=t.job, array=array)
        self.store.update_result(t.run_id, {"array": array})  # a retry keeps its throttle
        self.store.set_run_paths(t.run_id, str(spec.run_dir), str(spec.run_dir / "output-%a.log"))
        self._render_and_queue(spec, array)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._cycle()
            except Exception:
                log.exception("slurm_worker_error")
                time.sleep(1)
            now = time.monotonic()
            with self._lock:
                submit_due = [
                    t.submit_after
                    for t in self._tracked.values()
                    if t.needs_submit or t.cancel_requested
                ]
            wake_at = min([self._next_poll, *submit_due]) if submit_due else self._next_poll
            self._wake.wait(timeout=max(0.05, min(wake_at - now, self.poll_max_s)))
            self._wake.clear()

    def _cycle(self) -> None:
        with self._lock:
            tracked = list(self._tracked.values())
        now = time.monotonic()
        for t in tracked:
            if t.cancel_requested and (
                t.slurm_job_id is None and t.needs_submit and not t.lookup_first
            ):
                # Never submitted: nothing to cancel in Slurm.
                self._finish(
                    t, Outcome(RunState.CANCELLED, None, "cancelled before submission", utcnow())
                )
        for t in tracked:
            if t.run_id in self._outcomes:
                continue
            if t.run_id in self._plans:
                self._plan(t)
                continue
            if t.cancel_requested and t.slurm_job_id is not None:
                self._scancel(t)
            if t.needs_submit and now >= t.submit_after and not self.breaker.open:
                self._submit(t)
        if time.monotonic() >= self._next_poll:
            self._poll()

    def _scancel(self, t: TrackedRun) -> None:
        try:
            self.client.scancel([t.slurm_job_id] if t.slurm_job_id else [])
        except SlurmCommandError as exc:
            log.warning("slurm_cancel_failed", run_id=t.run_id, error=str(exc))
            t.submit_after = time.monotonic() + 5
            return
        log.info("slurm_cancelled", run_id=t.run_id, slurm_job_id=t.slurm_job_id)
        t.cancel_requested = False
        self._next_poll = 0.0

    def _submit(self, t: TrackedRun) -> None:
        bound = log.bind(run_id=t.run_id, job=t.job)
        if t.lookup_first:
            found = self._lookup(t)
            if found is None:
                return  # the lookup itself failed: try later, never resubmit blindly
            if found:
                bound.info("slurm_job_found_by_tag", slurm_job_id=found)
                self._record_job_id(t, found)
                return
            t.lookup_first = False
        if t.cancel_requested:
            # Cancelled while an ambiguous submission was being looked up, and Slurm has no
            # such job: submit nothing (only a job that exists needs scancel).
            self._finish(
                t, Outcome(RunState.CANCELLED, None, "cancelled before submission", utcnow())
            )
            return
        assert t.script is not None
        self.store.update_executor_data(
            t.run_id, {"submit_attempted_at": utcnow().isoformat(), "submission": t.submission}
        )
        try:
            job_id = self.client.sbatch(t.script)
        except SlurmCommandError as exc:
            if not exc.transient:
                bound.error("slurm_submit_rejected", error=exc.message)
                self._finish(
                    t,
                    Outcome(
                        RunState.FAILED, None, f"sbatch rejected the job: {exc.message}", utcnow()
                    ),
                )
                return
            t.submit_failures += 1
            t.lookup_first = True  # the job may exist although sbatch failed
            delay = min(2.0**t.submit_failures, self.submit_backoff_max_s)
            t.submit_after = time.monotonic() + delay
            if self.breaker.failure(exc.message):
                log.error("slurm_breaker_open", error=exc.message)
            bound.warning(
                "slurm_submit_failed", error=exc.message, retry_in_s=delay, ambiguous=exc.ambiguous
            )
            return
        if self.breaker.success():
            log.info("slurm_breaker_closed")
        bound.info("slurm_submitted", slurm_job_id=job_id, tag=job_tag(t.run_id, t.submission))
        self._record_job_id(t, job_id)

    def _record_job_id(self, t: TrackedRun, job_id: str) -> None:
        self.store.update_executor_data(t.run_id, {"slurm_job_id": job_id})
        t.slurm_job_id = job_id
        t.needs_submit = False
        t.submit_failures = 0
        self._next_poll = min(self._next_poll, time.monotonic() + min(1.0, self.poll_min_s))
        self.poll_interval_s = self.poll_min_s
