"""The fallback of a stalled queue (``executor.slurm.fallback``): a run whose tasks wait too long
in their first-choice queue (a GPU partition) has its still-pending tasks moved to a second job
with other resources (the CPU partition). Runs on the executor's worker thread only
(:class:`~orchestrator.executors.slurm.executor.SlurmExecutor` inherits it).

When to move is :func:`~orchestrator.executors.slurm.tracking.fallback_due` (pure). The move:

1. holding: ``scontrol uhold`` the candidates, then squeue. A task held while still pending can
   no longer start; one that started in the meantime goes on where it is (and is released:
   a hold sets a running job's priority to 0, which would matter if it were requeued). So no
   task ever runs in both places: only tasks seen pending *and* held are moved.
2. cancelling: ``scancel`` the held tasks (they never started).
3. submitting: ``sbatch --array=<moved tasks>%<throttle> job-fallback.sbatch`` (the fallback
   script, rendered with the run's, exports ``ORCH_FALLBACK=1``), with the look-up by tag
   before any second attempt, as for the run's own submission.

Each step is saved in the run's executor data before its Slurm call, so a daemon killed at any
point finishes the move after its restart (every step may be repeated safely).
"""

from __future__ import annotations

import contextlib
import time
from typing import Literal

import structlog

from orchestrator.clock import utcnow
from orchestrator.executors.slurm.commands import SlurmCommandError
from orchestrator.executors.slurm.parse import JobRow
from orchestrator.executors.slurm.polling import Polling
from orchestrator.executors.slurm.render import FALLBACK_SUFFIX, NO_TASK, job_tag
from orchestrator.executors.slurm.tracked import TrackedRun
from orchestrator.executors.slurm.tracking import fallback_due
from orchestrator.store.base import RunState

log = structlog.get_logger("orchestrator.slurm")

FALLBACK_REJECTED = "FALLBACK_REJECTED"


def _pending(row: JobRow | None) -> bool:
    return row is not None and row.state.upper().startswith("PENDING")


def _held(row: JobRow | None) -> bool:
    return _pending(row) and row is not None and row.reason.startswith("JobHeld")


class Fallback(Polling):
    """Worker-thread steps of a run's fallback; the executor sets the attributes up."""

    def _fallback_step(self, t: TrackedRun, live: dict[str, JobRow]) -> bool:
        """Watch a run's pending tasks; once a move is due (or under way after a restart),
        take it as far as it goes. True when something changed."""
        fb = t.fallback
        assert fb is not None
        if fb.state == "watching":
            pending = {k: r for k, r in live.items() if k in t.tasks and k not in t.task_results}
            move = fallback_due(
                pending, time.monotonic() - fb.progress_at, fb.after_s, fb.when_unavailable
            )
            if move is None:
                return False
            fb.state, fb.tasks, fb.reason = "holding", move.tasks, move.reason
            fb.at = utcnow().isoformat()
            self._save_fallback(t)
            log.warning(
                "slurm_fallback_due", run_id=t.run_id, job=t.job, tasks=fb.tasks, reason=fb.reason
            )
        try:
            if fb.state == "holding":
                self._hold_candidates(t)
            if fb.state == "cancelling":
                self._cancel_held(t)
            if fb.state == "submitting":
                self._submit_fallback(t)
        except SlurmCommandError as exc:
            # Every step may be repeated: the next poll takes it up again.
            log.warning(
                "slurm_fallback_step_failed", run_id=t.run_id, step=fb.state, error=str(exc)
            )
        return True

    def _save_fallback(self, t: TrackedRun) -> None:
        assert t.fallback is not None
        self.store.update_executor_data(t.run_id, {"fallback": t.fallback.record()})

    def _task_ids(self, t: TrackedRun, tasks: list[str]) -> list[str]:
        job = t.slurm_job_id or ""
        return [job if task == NO_TASK else f"{job}_{task}" for task in tasks]

    def _primary_rows(self, t: TrackedRun) -> dict[str, JobRow]:
        return {r.task or NO_TASK: r for r in self.client.squeue() if r.base_id == t.slurm_job_id}

    def _hold_candidates(self, t: TrackedRun) -> None:
        fb = t.fallback
        assert fb is not None
        self.client.hold(self._task_ids(t, fb.tasks))
        rows = self._primary_rows(t)
        held = [k for k in fb.tasks if _held(rows.get(k))]
        started = [k for k in fb.tasks if k not in held and k in rows and not _pending(rows[k])]
        if started:
            with contextlib.suppress(SlurmCommandError):
                self.client.release(self._task_ids(t, started))
        if not held:
            log.info("slurm_fallback_not_needed", run_id=t.run_id, started=started)
            fb.state, fb.tasks, fb.reason, fb.at = "watching", [], "", None
            fb.progress_at = time.monotonic()
        else:
            fb.state, fb.tasks = "cancelling", held
        self._save_fallback(t)

    def _cancel_held(self, t: TrackedRun) -> None:
        fb = t.fallback
        assert fb is not None
        try:
            self.client.scancel(self._task_ids(t, fb.tasks))
        except SlurmCommandError as exc:
            # after a restart the tasks may be cancelled already: squeue decides
            log.info("slurm_fallback_cancel_answer", run_id=t.run_id, error=str(exc))
        rows = self._primary_rows(t)
        if any(_pending(rows.get(k)) for k in fb.tasks):
            raise SlurmCommandError("scancel", "held tasks are still pending", transient=True)
        fb.state = "submitting"
        self._save_fallback(t)

    def _submit_fallback(self, t: TrackedRun) -> None:
        fb = t.fallback
        assert fb is not None
        if fb.submit_attempted:
            found = self._lookup_fallback(t)
            if found is None:
                raise SlurmCommandError(
                    "squeue", "look-up of the fallback job failed", transient=True
                )
            if found:
                self._fallback_submitted(t, found)
                return
        fb.submit_attempted = True
        self._save_fallback(t)
        array = None
        if fb.tasks != [NO_TASK]:
            array = ",".join(fb.tasks) + (f"%{fb.throttle}" if fb.throttle else "")
        try:
            job_id = self.client.sbatch(fb.script, array)
        except SlurmCommandError as exc:
            if exc.transient:
                raise
            log.error("slurm_fallback_rejected", run_id=t.run_id, error=exc.message)
            for task in fb.tasks:
                t.task_results[task] = {
                    "state": str(RunState.FAILED),
                    "exit_code": None,
                    "slurm_state": FALLBACK_REJECTED,
                    "fallback": True,
                    "error": f"sbatch rejected the fallback job: {exc.message}",
                }
            fb.state = "failed"
            fb.reason += f"; sbatch rejected the fallback job: {exc.message}"
            self._save_fallback(t)
            self._publish(t, None)
            return
        self._fallback_submitted(t, job_id)

    def _fallback_submitted(self, t: TrackedRun, job_id: str) -> None:
        fb = t.fallback
        assert fb is not None
        fb.job_id, fb.state = job_id, "submitted"
        self._save_fallback(t)
        self._publish(t, job_id)
        log.warning(
            "slurm_fallback_submitted",
            run_id=t.run_id,
            job=t.job,
            slurm_job_id=job_id,
            tasks=fb.tasks,
            reason=fb.reason,
        )
        self._next_poll = min(self._next_poll, time.monotonic() + min(1.0, self.poll_min_s))

    def _publish(self, t: TrackedRun, job_id: str | None) -> None:
        """The move in the run's result: ``status`` shows it while the run goes on."""
        fb = t.fallback
        assert fb is not None
        plain = fb.tasks == [NO_TASK]
        summary = {
            "what": "the job" if plain else f"tasks {','.join(fb.tasks)}",
            "tasks": [] if plain else fb.tasks,
            "reason": fb.reason,
            "at": fb.at,
            "job": job_id,
        }
        self.store.update_result(t.run_id, {"fallback": summary})

    def _lookup_fallback(self, t: TrackedRun) -> str | Literal[False] | None:
        """The fallback job's id if Slurm or a moved task's marker knows it; False when surely
        not submitted; None when the look-up could not be made."""
        fb = t.fallback
        assert fb is not None
        for task in fb.tasks:
            with contextlib.suppress(OSError, ValueError):
                job = (t.run_dir / f"started.{task}").read_text().strip().split("_")[0]
                if job and job != t.slurm_job_id:
                    return job
        return self._lookup_tag(t, job_tag(t.run_id, 0, FALLBACK_SUFFIX))
