"""Submit runs as Slurm batch jobs, track them to the end, survive restarts and outages.

Threading: the daemon's main thread calls ``start``, ``cancel``, ``adopt`` and ``poll_many``,
which only queue work or hand over results; one worker thread here does every Slurm call, so
a hung controller never blocks the daemon's main loop. The worker writes the Slurm job id and
per-task results to the store (which is thread-safe); terminal states are handed back through
``poll_many`` and recorded by the daemon, so retries and ``after`` triggers stay in one place.

Invariants:
- One Slurm job per run submission. The run record and the rendered script exist before
  sbatch runs; ``submit_attempted_at`` is stored before each sbatch call. After any transient
  sbatch failure, and for a run adopted with an attempt but no job id (a daemon killed between
  sbatch and recording the id), the job is looked up by its unique tag (squeue, sacct, and the
  ``started.*`` marker the script writes) before anything is submitted again.
- A failed status query never changes a run's state. A job missing from squeue and unknown to
  sacct is unknown, not finished; it becomes lost only after ``lost_grace_s``.
- After ``breaker_threshold`` consecutive controller errors, submission pauses (the circuit
  breaker opens); status polls continue as probes with backoff and close it when one succeeds.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import structlog

from orchestrator.executors.base import Outcome, RunSpec
from orchestrator.executors.slurm.commands import (
    AccountingDisabledError,
    SlurmClient,
    SlurmCommandError,
)
from orchestrator.executors.slurm.parse import Action, JobRow, classify_state
from orchestrator.executors.slurm.render import (
    NO_TASK,
    SCRIPT_NAME,
    BatchRequest,
    job_tag,
    render_batch_script,
)
from orchestrator.manifests.models import SlurmOptions, parse_array
from orchestrator.store.base import RunRecord, RunState

log = structlog.get_logger("orchestrator.slurm")

# Severity order when array tasks end differently: the run takes the worst.
_SEVERITY = [
    RunState.SUCCEEDED,
    RunState.CANCELLED,
    RunState.TIMED_OUT,
    RunState.LOST,
    RunState.FAILED,
]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class CircuitBreaker:
    """Opens after ``threshold`` consecutive controller errors; any success closes it."""

    threshold: int = 3
    failures: int = 0
    opened_at: datetime | None = None
    last_error: str | None = None

    @property
    def open(self) -> bool:
        return self.opened_at is not None

    def success(self) -> bool:
        """Record a success; True when this closed an open breaker."""
        was_open = self.open
        self.failures, self.opened_at = 0, None
        return was_open

    def failure(self, error: str) -> bool:
        """Record a failure; True when this opened the breaker."""
        self.failures += 1
        self.last_error = error
        if self.opened_at is None and self.failures >= self.threshold:
            self.opened_at = utcnow()
            return True
        return False


@dataclass(eq=False)
class _Tracked:
    run_id: str
    job: str
    run_dir: Path
    created_at: datetime
    script: Path | None
    tasks: list[str]  # array task ids as text, or [NO_TASK]
    max_resubmits: int
    slurm_job_id: str | None = None
    submission: int = 0
    needs_submit: bool = False
    lookup_first: bool = False
    submit_after: float = 0.0
    submit_failures: int = 0
    cancel_requested: bool = False
    marked_running: bool = False
    first_unknown: dict[str, float] = field(default_factory=dict)
    task_results: dict[str, dict[str, Any]] = field(default_factory=dict)


class SlurmExecutor:
    """See the module docstring."""

    name = "slurm"

    def __init__(
        self,
        store: Any,
        client: SlurmClient | None = None,
        poll_min_s: float = 15.0,
        poll_max_s: float = 180.0,
        lost_grace_s: float = 600.0,
        breaker_threshold: int = 3,
        submit_backoff_max_s: float = 300.0,
    ) -> None:
        self.store = store
        self.client = client or SlurmClient()
        self.poll_min_s = poll_min_s
        self.poll_max_s = poll_max_s
        self.lost_grace_s = lost_grace_s
        self.submit_backoff_max_s = submit_backoff_max_s
        self.breaker = CircuitBreaker(threshold=breaker_threshold)
        self.accounting: bool | None = None  # unknown until sacct answers once
        self.poll_interval_s = poll_min_s
        self.polls = 0
        self._tracked: dict[str, _Tracked] = {}
        self._outcomes: dict[str, Outcome] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_poll = 0.0

    # ------------------------------------------------------------ daemon-facing

    def start_worker(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="slurm", daemon=True)
            self._thread.start()

    def stop_worker(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def start(self, spec: RunSpec) -> None:
        """Render the batch script into the run directory and queue the submission. Returns
        at once: sbatch runs on the worker thread."""
        assert isinstance(spec.options, SlurmOptions)
        req = BatchRequest(
            run_id=spec.run_id,
            job=spec.job,
            attempt=spec.attempt,
            argv=spec.argv,
            env=spec.env,
            workdir=spec.workdir,
            run_dir=spec.run_dir,
            options=spec.options,
            array=spec.array,
        )
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        script = spec.run_dir / SCRIPT_NAME
        script.write_text(render_batch_script(req, spec.env_overrides))
        array = spec.array if spec.array is not None else spec.options.array
        tasks = [str(t) for t in parse_array(array)[0]] if array else [NO_TASK]
        self.store.update_executor_data(
            spec.run_id,
            {
                "script": str(script),
                "tag": job_tag(spec.run_id),
                "array": array,
                "tasks": tasks,
                "max_resubmits": spec.options.max_resubmits,
            },
        )
        tracked = _Tracked(
            run_id=spec.run_id,
            job=spec.job,
            run_dir=spec.run_dir,
            created_at=utcnow(),
            script=script,
            tasks=tasks,
            max_resubmits=spec.options.max_resubmits,
            needs_submit=True,
        )
        with self._lock:
            self._tracked[spec.run_id] = tracked
        self._wake.set()

    def adopt(self, run: RunRecord) -> Outcome | None:
        """Take over a run a previous daemon left active. Returns an Outcome only when the
        run can never have been submitted (no rendered script)."""
        data = run.executor_data or {}
        script = Path(data["script"]) if data.get("script") else None
        if script is None or not script.exists():
            return Outcome(
                RunState.LOST,
                None,
                "the daemon stopped before the batch script was written; never submitted",
                utcnow(),
            )
        tracked = _Tracked(
            run_id=run.run_id,
            job=run.job,
            run_dir=script.parent,
            created_at=run.created_at,
            script=script,
            tasks=list(data.get("tasks") or [NO_TASK]),
            max_resubmits=int(data.get("max_resubmits", 2)),
            slurm_job_id=data.get("slurm_job_id"),
            submission=int(data.get("submission", 0)),
            marked_running=run.state == RunState.RUNNING,
        )
        if tracked.slurm_job_id is None:
            tracked.needs_submit = True
            # A previous daemon may have called sbatch and died before recording the id.
            tracked.lookup_first = bool(data.get("submit_attempted_at"))
        tracked.task_results = dict((run.result or {}).get("tasks", {}))
        with self._lock:
            self._tracked[run.run_id] = tracked
        self._next_poll = 0.0
        self._wake.set()
        log.info(
            "slurm_run_adopted",
            run_id=run.run_id,
            job=run.job,
            slurm_job_id=tracked.slurm_job_id,
            lookup=tracked.lookup_first,
        )
        return None

    def poll_many(self, runs: Iterable[RunRecord]) -> dict[str, Outcome]:
        """Outcomes the worker found since the last call, for the given runs."""
        wanted = {r.run_id for r in runs}
        with self._lock:
            done = {k: v for k, v in self._outcomes.items() if k in wanted}
            for k in done:
                del self._outcomes[k]
                self._tracked.pop(k, None)
        return done

    def cancel(self, run: RunRecord) -> None:
        with self._lock:
            tracked = self._tracked.get(run.run_id)
            if tracked is not None:
                tracked.cancel_requested = True
        self._wake.set()

    def health(self) -> dict[str, Any]:
        with self._lock:
            queued = sum(1 for t in self._tracked.values() if t.needs_submit)
            tracked = len(self._tracked)
        return {
            "breaker": "open" if self.breaker.open else "closed",
            "breaker_opened_at": self.breaker.opened_at.isoformat()
            if self.breaker.opened_at
            else None,
            "consecutive_failures": self.breaker.failures,
            "last_error": self.breaker.last_error,
            "accounting": self.accounting,
            "poll_interval_s": self.poll_interval_s,
            "tracked_runs": tracked,
            "awaiting_submission": queued,
        }

    # ------------------------------------------------------------ worker

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
            if t.cancel_requested and t.slurm_job_id is not None:
                self._scancel(t)
            if t.needs_submit and now >= t.submit_after and not self.breaker.open:
                self._submit(t)
        if time.monotonic() >= self._next_poll:
            self._poll()

    def _scancel(self, t: _Tracked) -> None:
        try:
            self.client.scancel([t.slurm_job_id] if t.slurm_job_id else [])
        except SlurmCommandError as exc:
            log.warning("slurm_cancel_failed", run_id=t.run_id, error=str(exc))
            t.submit_after = time.monotonic() + 5
            return
        log.info("slurm_cancelled", run_id=t.run_id, slurm_job_id=t.slurm_job_id)
        t.cancel_requested = False
        self._next_poll = 0.0

    def _submit(self, t: _Tracked) -> None:
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

    def _record_job_id(self, t: _Tracked, job_id: str) -> None:
        self.store.update_executor_data(t.run_id, {"slurm_job_id": job_id})
        t.slurm_job_id = job_id
        t.needs_submit = False
        t.submit_failures = 0
        self._next_poll = min(self._next_poll, time.monotonic() + min(1.0, self.poll_min_s))
        self.poll_interval_s = self.poll_min_s

    def _lookup(self, t: _Tracked) -> str | Literal[False] | None:
        """The job id of this run's current submission if Slurm (or its marker file) knows
        it; False when surely not submitted; None when the lookup could not be made."""
        tag = job_tag(t.run_id, t.submission)
        for marker in sorted(t.run_dir.glob("started.*")):
            with contextlib.suppress(OSError, ValueError):
                text = marker.read_text().strip()
                if text:
                    return text.split("_")[0]
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

    # ------------------------------------------------------------ tracking

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
                (r := by_job.get(t.slurm_job_id or "", {}).get(task)) is None
                or classify_state(r.state)[0] != Action.ACTIVE
                for task in t.tasks
                if task not in t.task_results
            )
        ]
        final_rows: dict[str, dict[str, JobRow]] = {}
        if need_final and self.accounting is not False:
            start = min(t.created_at for t in need_final) - timedelta(hours=1)
            try:
                for row in self.client.sacct([t.slurm_job_id or "" for t in need_final], start):
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
            changed |= self._update(
                t,
                by_job.get(t.slurm_job_id or "", {}),
                final_rows.get(t.slurm_job_id or "", {}),
                sacct_answered=t in need_final and self.accounting is True,
            )
        self._backoff(changed)

    def _backoff(self, changed: bool) -> None:
        if changed:
            self.poll_interval_s = self.poll_min_s
        else:
            self.poll_interval_s = min(self.poll_interval_s * 2, self.poll_max_s)
        self._next_poll = time.monotonic() + self.poll_interval_s

    def _update(
        self,
        t: _Tracked,
        live: dict[str, JobRow],
        final: dict[str, JobRow],
        sacct_answered: bool,
    ) -> bool:
        changed = False
        any_running = False
        resubmit = False
        now = time.monotonic()
        for task in t.tasks:
            if task in t.task_results:
                continue
            row = final.get(task)
            if row is not None and not row.complete:
                row = None  # sacct's record of the end has not arrived yet (see JobRow)
            action, state = classify_state(row.state) if row else (None, None)
            exit_code = row.exit_code if row else None
            if action is None or action == Action.ACTIVE:
                live_row = live.get(task)
                if live_row is not None:
                    action, state = classify_state(live_row.state)
                    exit_code = None
            if action == Action.FINAL and row is None:
                # Ended in squeue; without accounting the script's exit file has the code.
                if self.accounting is True:
                    continue  # sacct lags (notes): wait for its authoritative row
                exit_code = self._exit_file(t, task)
            if action is None:
                exit_code = self._exit_file(t, task)
                if exit_code is not None and self.accounting is not True:
                    action = Action.FINAL
                    state = RunState.SUCCEEDED if exit_code == 0 else RunState.FAILED
                else:
                    first = t.first_unknown.setdefault(task, now)
                    if now - first < self.lost_grace_s:
                        continue
                    if exit_code is not None:
                        # Accounting never recorded the end, but the script did: trust the
                        # exit code it wrote rather than calling a finished job lost.
                        action = Action.FINAL
                        state = RunState.SUCCEEDED if exit_code == 0 else RunState.FAILED
                    else:
                        action, state = Action.FINAL, RunState.LOST
            t.first_unknown.pop(task, None)
            if action == Action.ACTIVE:
                any_running |= state == RunState.RUNNING
                continue
            if action == Action.RESUBMIT:
                if t.tasks == [NO_TASK] and t.submission < t.max_resubmits:
                    resubmit = True
                    continue
                state = RunState.FAILED
            assert state is not None
            t.task_results[task] = {
                "state": str(state),
                "exit_code": exit_code,
                "slurm_state": (
                    row.state if row else live.get(task, JobRow("", "", None, "", "LOST")).state
                ),
            }
            log.debug(
                "slurm_task_ended",
                run_id=t.run_id,
                task=task,
                **t.task_results[task],
                sacct_row=row.state if row else None,
            )
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
            self._finish(t, self._outcome(t))
            return True
        return changed

    def _exit_file(self, t: _Tracked, task: str) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((t.run_dir / f"exit.{task}").read_text().strip())
        return None

    def _resubmit(self, t: _Tracked) -> None:
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

    def _outcome(self, t: _Tracked) -> Outcome:
        results = t.task_results
        states = [RunState(results[task]["state"]) for task in t.tasks]
        worst = max(states, key=_SEVERITY.index)
        if t.tasks == [NO_TASK]:
            r = results[NO_TASK]
            message = None if worst == RunState.SUCCEEDED else f"Slurm state {r['slurm_state']}"
            return Outcome(worst, r["exit_code"], message, utcnow())
        bad = [task for task in t.tasks if results[task]["state"] != RunState.SUCCEEDED]
        ok = len(t.tasks) - len(bad)
        message = f"{ok}/{len(t.tasks)} array tasks succeeded"
        if bad:
            message += f"; not succeeded: {','.join(bad)}"
        codes = [results[task]["exit_code"] for task in bad if results[task]["exit_code"]]
        return Outcome(worst, codes[0] if codes else (0 if not bad else None), message, utcnow())

    def _finish(self, t: _Tracked, outcome: Outcome) -> None:
        with self._lock:
            self._outcomes[t.run_id] = outcome
            t.needs_submit = False
