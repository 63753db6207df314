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

Here: the daemon-facing calls; the worker loop, the plan step and submission are
:mod:`.submission`, the look-up by tag and tracking :mod:`.polling`, each task's phase
:mod:`.tracking`, the per-run record and the breaker :mod:`.tracked`.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from orchestrator.clock import utcnow
from orchestrator.executors.base import Outcome, RunSpec
from orchestrator.executors.slurm.commands import (
    SlurmClient,
)
from orchestrator.executors.slurm.options import SlurmOptions, failed_tasks_array, parse_array
from orchestrator.executors.slurm.render import (
    FALLBACK_SCRIPT_NAME,
    FALLBACK_SUFFIX,
    NO_TASK,
    SCRIPT_NAME,
    BatchRequest,
    job_tag,
    render_batch_script,
)
from orchestrator.executors.slurm.submission import Submission
from orchestrator.executors.slurm.tracked import (
    CircuitBreaker,
    FallbackLeg,
    TrackedRun,
    tracked_from_record,
)
from orchestrator.settings import Settings, env_float
from orchestrator.store.base import RunRecord, Store

log = structlog.get_logger("orchestrator.slurm")


def from_settings(settings: Settings) -> SlurmExecutor:
    """The daemon's Slurm executor, from ``ORCH_SLURM_*`` (see the README's settings table).

    The spool directory holds batch scripts, Slurm output and marker files: it must be on a
    file system the compute nodes share (on Perlmutter e.g. ``$SCRATCH/orchestrator``); the
    default, ``slurm/`` under the state directory, suits a single-node cluster only."""
    spool = os.environ.get("ORCH_SLURM_SPOOL_DIR") or settings.state_dir / "slurm"
    return SlurmExecutor(
        spool_dir=Path(spool).expanduser().absolute(),
        poll_min_s=env_float("ORCH_SLURM_POLL_MIN_S", 15.0),
        poll_max_s=env_float("ORCH_SLURM_POLL_MAX_S", 180.0),
        lost_grace_s=env_float("ORCH_SLURM_LOST_GRACE_S", 600.0),
    )


class SlurmExecutor(Submission):
    """See the module docstring."""

    name = "slurm"
    outlives_daemon = True  # batch jobs go on in the cluster; the next daemon adopts them
    capacity = None  # Slurm queues what it cannot run yet

    def __init__(
        self,
        store: Store | None = None,
        client: SlurmClient | None = None,
        spool_dir: Path | None = None,
        poll_min_s: float = 15.0,
        poll_max_s: float = 180.0,
        lost_grace_s: float = 600.0,
        breaker_threshold: int = 3,
        submit_backoff_max_s: float = 300.0,
    ) -> None:
        self._store = store
        # run directories must be visible to compute nodes: the spool directory
        self.runs_root = spool_dir
        self.client = client or SlurmClient()
        self.poll_min_s = poll_min_s
        self.poll_max_s = poll_max_s
        self.lost_grace_s = lost_grace_s
        self.submit_backoff_max_s = submit_backoff_max_s
        self.breaker = CircuitBreaker(threshold=breaker_threshold)
        self.accounting: bool | None = None  # unknown until sacct answers once
        self.poll_interval_s = poll_min_s
        self.polls = 0
        self._tracked: dict[str, TrackedRun] = {}
        self._plans: dict[str, RunSpec] = {}  # runs whose array their plan step decides
        self._outcomes: dict[str, Outcome] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_poll = 0.0

    # ------------------------------------------------------------ daemon-facing

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the Slurm executor has no run store (open it first)")
        return self._store

    def open(self, store: Store) -> None:
        """Start the worker thread that makes every Slurm call, writing to ``store``."""
        self._store = store
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="slurm", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def max_active(self, options: Any) -> tuple[int, str] | None:
        if isinstance(options, SlurmOptions) and options.max_queued is not None:
            return options.max_queued, "executor.slurm.max_queued"
        return None

    def log_name(self, options: Any, array: str | None) -> str:
        effective = array if array is not None else getattr(options, "array", None)
        return "output-%a.log" if effective else "output.log"

    def retry_array(self, options: Any, result: dict[str, Any] | None) -> str | None:
        # the manifest's array, or the one the run's plan step named (kept in its result)
        array = getattr(options, "array", None) or (result or {}).get("array")
        return failed_tasks_array(array if isinstance(array, str) else None, result)

    def status_note(self) -> str | None:
        if self.breaker.open:
            return f"Slurm submission paused: {self.breaker.last_error}"
        return None

    def start(self, spec: RunSpec) -> None:
        """Render the batch script into the run directory and queue the submission. Returns
        at once: sbatch runs on the worker thread, and so does the plan step of a run that
        plans its own array (``spec.plan_argv``, when neither the manifest nor a retry gives
        one): the script is rendered once the array is known."""
        assert isinstance(spec.options, SlurmOptions)
        if spec.plan_argv and spec.array is None and spec.options.array is None:
            with self._lock:
                self._tracked[spec.run_id] = _tracked(spec, None, [])
                self._plans[spec.run_id] = spec
            self._wake.set()
            return
        self._render_and_queue(spec, spec.array)

    def preview(self, spec: RunSpec) -> list[tuple[str, str]]:
        """The batch script (and a fallback's) a run would be submitted with."""
        assert isinstance(spec.options, SlurmOptions)
        req = _request(spec, spec.array)
        out = [("Slurm batch script", render_batch_script(req, spec.env_overrides))]
        if spec.options.fallback is not None:
            fallback_req = dataclasses.replace(req, options=spec.options.fallback_options())
            env = {**spec.env_overrides, "ORCH_FALLBACK": "1"}
            out.append(("its fallback's batch script", render_batch_script(fallback_req, env)))
        if spec.plan_argv and spec.array is None and spec.options.array is None:
            out.append(("array", "planned at submission by: " + shlex.join(spec.plan_argv)))
        return out

    def _render_and_queue(self, spec: RunSpec, array_override: str | None) -> None:
        assert isinstance(spec.options, SlurmOptions)
        req = _request(spec, array_override)
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        script = spec.run_dir / SCRIPT_NAME
        script.write_text(render_batch_script(req, spec.env_overrides))
        array = array_override if array_override is not None else spec.options.array
        tasks = [str(t) for t in parse_array(array)[0]] if array else [NO_TASK]
        fallback = _render_fallback(req, spec.env_overrides, array)
        self.store.update_executor_data(
            spec.run_id,
            {
                "script": str(script),
                "tag": job_tag(spec.run_id),
                "array": array,
                "tasks": tasks,
                "max_resubmits": spec.options.max_resubmits,
                **({"fallback": fallback.record()} if fallback else {}),
            },
        )
        tracked = _tracked(spec, script, tasks)
        tracked.fallback = fallback
        tracked.needs_submit = True
        with self._lock:
            self._tracked[spec.run_id] = tracked
        self._wake.set()

    def adopt(self, run: RunRecord) -> Outcome | None:
        """Take over a run a previous daemon left active. Returns an Outcome only when the
        run can never have been submitted (no rendered script)."""
        tracked = tracked_from_record(run)
        if isinstance(tracked, Outcome):
            return tracked
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

    def poll_many(self, runs: Sequence[RunRecord]) -> dict[str, Outcome]:
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
            **self.client.counts(),  # calls and errors per command since start (metrics)
            "note": (
                f"Slurm submission paused since {self.breaker.opened_at.isoformat()}: "
                f"{self.breaker.last_error} (probing; resumes by itself)"
                if self.breaker.open and self.breaker.opened_at
                else None
            ),
        }


def _request(spec: RunSpec, array: str | None) -> BatchRequest:
    assert isinstance(spec.options, SlurmOptions)
    return BatchRequest(
        run_id=spec.run_id,
        job=spec.job,
        attempt=spec.attempt,
        argv=spec.argv,
        env=spec.env,
        workdir=spec.workdir,
        run_dir=spec.run_dir,
        options=spec.options,
        array=array,
    )


def _tracked(spec: RunSpec, script: Path | None, tasks: list[str]) -> TrackedRun:
    """A run started here: its script (None while its plan step has not named the array)."""
    assert isinstance(spec.options, SlurmOptions)
    return TrackedRun(
        run_id=spec.run_id,
        job=spec.job,
        run_dir=spec.run_dir,
        created_at=utcnow(),
        script=script,
        tasks=tasks,
        max_resubmits=spec.options.max_resubmits,
    )


def _render_fallback(
    req: BatchRequest, env_overrides: dict[str, str], array: str | None
) -> FallbackLeg | None:
    """The fallback job's script (``executor.slurm.fallback``), rendered beside the run's so
    that a restarted daemon can submit it: the run's options with the fallback's put in, the
    run's whole array (sbatch is given the moved tasks), ``ORCH_FALLBACK=1`` for the command."""
    fb = req.options.fallback
    if fb is None:
        return None
    fallback_req = dataclasses.replace(
        req,
        options=req.options.fallback_options(),
        tag_suffix=FALLBACK_SUFFIX,
        script_name=FALLBACK_SCRIPT_NAME,
    )
    script = req.run_dir / FALLBACK_SCRIPT_NAME
    script.write_text(render_batch_script(fallback_req, {**env_overrides, "ORCH_FALLBACK": "1"}))
    throttle = (array or "").partition("%")[2] or None
    return FallbackLeg(
        script, fb.after, fb.when_unavailable, throttle, progress_at=time.monotonic()
    )
