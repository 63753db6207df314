"""The tracking half of the Slurm executor: the look-up of a submission by its tag, one batched
squeue (and, where needed, one sacct) per poll cycle, each task's phase from
:func:`~orchestrator.executors.slurm.tracking.track_task`, resubmission after a node failure,
backoff while nothing changes. Runs on the executor's worker thread only
(:class:`~orchestrator.executors.slurm.executor.SlurmExecutor` inherits it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
from datetime import timedelta
from typing import Any, Literal

import structlog

from orchestrator.executors.base import Outcome
from orchestrator.executors.slurm.commands import (
    AccountingDisabledError,
    SlurmClient,
    SlurmCommandError,
)
from orchestrator.executors.slurm.parse import Action, JobRow, classify_state
from orchestrator.executors.slurm.render import NO_TASK, job_tag
from orchestrator.executors.slurm.tracked import CircuitBreaker, TrackedRun, run_outcome
from orchestrator.executors.slurm.tracking import Phase, Tracked, track_task
from orchestrator.executors.slurm.usage import of_run, total
from orchestrator.store.base import RunState, Store

log = structlog.get_logger("orchestrator.slurm")


class Polling:
    """State and steps of polling; the executor sets these attributes up."""

    client: SlurmClient
    breaker: CircuitBreaker
    accounting: bool | None
    poll_min_s: float
    poll_max_s: float
    poll_interval_s: float
    lost_grace_s: float
    polls: int
    _next_poll: float
    _lock: threading.Lock
    _tracked: dict[str, TrackedRun]
    _outcomes: dict[str, Outcome]
    # usage by (job id, task) from this poll cycle's sacct (executors.slurm.usage)
    _cycle_usage: dict[tuple[str, str], dict[str, Any]] = {}

    @property
    def store(self) -> Store:
        raise NotImplementedError

    def _lookup(self, t: TrackedRun) -> str | Literal[False] | None:
        """The job id of this run's current submission if Slurm (or its marker file) knows
        it; False when surely not submitted; None when the lookup could not be made."""
        for marker in sorted(t.run_dir.glob("started.*")):
            with contextlib.suppress(OSError, ValueError):
                text = marker.read_text().strip()
                if text:
                    return text.split("_")[0]
        return self._lookup_tag(t, job_tag(t.run_id, t.submission))

    def _lookup_tag(self, t: TrackedRun, tag: str) -> str | Literal[False] | None:
        """The id of the job named ``tag`` in squeue or sacct; False when neither knows it;
        None when the look-up could not be made."""
        try:
            rows = self.client.squeue()
        except SlurmCommandError as exc:
            self.breaker.failure(exc.message)
            t.submit_after = time.monotonic() + min(self.poll_interval_s, 30)
            return None
        self.breaker.success()
        for row in rows:
            if row.name == tag:
                return row.base_id
        if self.accounting is not False:
            try:
                rows = self.client.sacct_by_name([tag], t.created_at - timedelta(days=1))
                self.accounting = True
            except AccountingDisabledError:
                self.accounting = False
                rows = []
            except SlurmCommandError as exc:
                log.warning("slurm_lookup_sacct_failed", run_id=t.run_id, error=exc.message)
                t.submit_after = time.monotonic() + min(self.poll_interval_s, 30)
                return None
            for row in rows:
                if row.name == tag:
                    return row.base_id
        return False

    def _poll(self) -> None:
        with self._lock:
            active = [
                t
                for t in self._tracked.values()
                if t.slurm_job_id is not None and t.run_id not in self._outcomes
            ]
        if not active:
            self._next_poll = time.monotonic() + self.poll_min_s
            return
        self.polls += 1
        try:
            rows = self.client.squeue()
        except SlurmCommandError as exc:
            opened = self.breaker.failure(exc.message)
            if opened:
                log.error("slurm_breaker_open", error=exc.message)
            log.warning("slurm_status_failed", error=exc.message, runs=len(active))
            self._backoff(changed=False)
            return
        if self.breaker.success():
            log.info("slurm_breaker_closed")
        by_job: dict[str, dict[str, JobRow]] = {}
        for row in rows:
            by_job.setdefault(row.base_id, {})[row.task or NO_TASK] = row
        # Jobs that need sacct: a task missing from squeue, or ended there (sacct has the
        # authoritative exit code).
        need_final = [
            t
            for t in active
            if any(
                (r := by_job.get(job, {}).get(task)) is None
                or classify_state(r.state)[0] != Action.ACTIVE
                for task in t.tasks
                if task not in t.task_results and (job := t.job_of(task)) is not None
            )
        ]
        final_rows: dict[str, dict[str, JobRow]] = {}
        self._cycle_usage = {}
        if need_final and self.accounting is not False:
            start = min(t.created_at for t in need_final) - timedelta(hours=1)
            job_ids = sorted({j for t in need_final for j in _job_ids(t)})
            try:
                found, self._cycle_usage = self.client.sacct_with_usage(job_ids, start)
                for row in found:
                    final_rows.setdefault(row.base_id, {})[row.task or NO_TASK] = row
                self.accounting = True
            except AccountingDisabledError:
                if self.accounting is None:
                    log.info("slurm_accounting_disabled", fallback="squeue and exit files")
                self.accounting = False
            except SlurmCommandError as exc:
                # slurmdbd down: sacct fails while the controller works. Wait, change nothing.
                log.warning("slurm_sacct_failed", error=exc.message)
                final_rows = {}
                need_final = []
        changed = False
        for t in active:
            changed |= self._update(t, by_job, final_rows)
        self._backoff(changed)

    def _backoff(self, changed: bool) -> None:
        if changed:
            self.poll_interval_s = self.poll_min_s
        else:
            self.poll_interval_s = min(self.poll_interval_s * 2, self.poll_max_s)
        self._next_poll = time.monotonic() + self.poll_interval_s

    def _update(
        self,
        t: TrackedRun,
        live_rows: dict[str, dict[str, JobRow]],
        final_rows: dict[str, dict[str, JobRow]],
    ) -> bool:
        """One run after a poll: each task's phase from the rows of the job that runs it (the
        run's, or its fallback job's for a moved task), then the fallback's watch."""
        changed = False
        any_running = False
        resubmit = False
        now = time.monotonic()
        for task in t.tasks:
            job = t.job_of(task)
            if task in t.task_results or job is None:
                continue  # ended, or moved to a fallback job not submitted yet
            where = self._track(
                t, task, live_rows.get(job, {}).get(task), final_rows.get(job, {}).get(task), now
            )
            if where.phase == Phase.AWAITING_ACCOUNTING:
                continue  # sacct lags (notes): wait for its authoritative row
            if where.phase == Phase.UNKNOWN:
                t.first_unknown.setdefault(task, now)
                continue
            t.first_unknown.pop(task, None)
            if where.phase == Phase.ACTIVE:
                any_running |= where.state == RunState.RUNNING
                continue
            if where.phase == Phase.RESUBMIT:
                resubmit = True
                continue
            assert where.state is not None
            t.task_results[task] = {
                "state": str(where.state),
                "exit_code": where.exit_code,
                "slurm_state": where.slurm_state,
                **({"fallback": True} if t.moved(task) else {}),
            }
            log.debug("slurm_task_ended", run_id=t.run_id, task=task, **t.task_results[task])
            changed = True
        if any_running and not t.marked_running:
            t.marked_running = True
            self.store.mark_running(t.run_id, None, None)
            changed = True
        if changed and t.tasks != [NO_TASK]:
            self.store.update_result(t.run_id, {"tasks": t.task_results})
        if resubmit:
            t.submission += 1
            self._resubmit(t)
            return True
        if all(task in t.task_results for task in t.tasks):
            self._finish(t, run_outcome(t))
            return True
        if t.fallback is not None and t.fallback.state not in ("submitted", "failed"):
            changed |= self._fallback_step(t, live_rows.get(t.slurm_job_id or "", {}))
        return changed

    def _track(
        self, t: TrackedRun, task: str, live: JobRow | None, final: JobRow | None, now: float
    ) -> Tracked:
        """Where one task stands; a task seen started for the first time restarts the
        fallback's clock (the queue moves)."""
        first_unseen = t.first_unknown.get(task)
        where = track_task(
            final,
            live,
            self.accounting,
            functools.partial(self._exit_file, t, task),
            now - first_unseen if first_unseen is not None else 0.0,
            self.lost_grace_s,
            can_resubmit=t.tasks == [NO_TASK]
            and t.submission < t.max_resubmits
            and not t.moved(task),
        )
        started = where.phase == Phase.ENDED or where.state == RunState.RUNNING
        if started and task not in t.seen_started:
            t.seen_started.add(task)
            if t.fallback is not None:
                t.fallback.progress_at = now
        return where

    def _fallback_step(self, t: TrackedRun, live: dict[str, JobRow]) -> bool:
        raise NotImplementedError

    def _exit_file(self, t: TrackedRun, task: str) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((t.run_dir / f"exit.{task}").read_text().strip())
        return None

    def _resubmit(self, t: TrackedRun) -> None:
        """NODE_FAIL/BOOT_FAIL: the same run, a new submission with its own tag."""
        assert t.script is not None
        text = t.script.read_text()
        old_tag, new_tag = job_tag(t.run_id, t.submission - 1), job_tag(t.run_id, t.submission)
        t.script.write_text(text.replace(f"--job-name={old_tag}", f"--job-name={new_tag}", 1))
        for marker in t.run_dir.glob("started.*"):
            marker.unlink(missing_ok=True)
        log.warning(
            "slurm_resubmitting", run_id=t.run_id, old_job=t.slurm_job_id, submission=t.submission
        )
        t.slurm_job_id = None
        t.needs_submit = True
        t.submit_after = 0.0
        self.store.update_executor_data(
            t.run_id, {"slurm_job_id": None, "submission": t.submission}
        )

    def _finish(self, t: TrackedRun, outcome: Outcome) -> None:
        usage = self._usage(t)
        if usage is not None:
            outcome = dataclasses.replace(outcome, usage=usage)
        with self._lock:
            self._outcomes[t.run_id] = outcome
            t.needs_submit = False

    def _usage(self, t: TrackedRun) -> dict[str, Any] | None:
        """What the run used, from this cycle's sacct rows (executors.slurm.usage); an
        array's tasks' own in its result's ``tasks``. None without accounting."""
        per_task = of_run(self._cycle_usage, _job_ids(t))
        if not per_task:
            return None
        if t.tasks != [NO_TASK]:
            for task, used in per_task.items():
                if task in t.task_results:
                    t.task_results[task]["usage"] = {k: v for k, v in used.items() if k != "job"}
            self.store.update_result(t.run_id, {"tasks": t.task_results})
        return total(list(per_task.values()))


def _job_ids(t: TrackedRun) -> list[str]:
    """The Slurm jobs of a run: its own, and its fallback job once submitted."""
    ids = [t.slurm_job_id] if t.slurm_job_id else []
    if t.fallback is not None and t.fallback.job_id:
        ids.append(t.fallback.job_id)
    return ids
