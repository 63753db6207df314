"""Requests on the control socket (ping, status, reload, trigger, cancel), answered on the main
loop: a socket thread hands each over as an event and waits for the answer."""

from __future__ import annotations

import os
import queue
import socket
from collections.abc import Callable
from typing import Any

import structlog

from orchestrator.clock import utcnow
from orchestrator.errors import OrchestratorError, StoreUnavailableError
from orchestrator.notify.model import notify_digest
from orchestrator.scheduling.scheduler import Scheduler
from orchestrator.status import JobView, Since, job_row, since_for
from orchestrator.store.base import RunRecord, Trigger

from .events import Control, ControlTicket
from .state import Shared
from .supervision import DeferredError, Runs

log = structlog.get_logger("orchestrator.daemon")

REPLY_TIMEOUT_S = 10.0


class ControlHandler:
    # class attribute: tests shorten it
    reply_timeout_s = REPLY_TIMEOUT_S

    def __init__(
        self,
        shared: Shared,
        runs: Runs,
        scheduler: Scheduler,
        reload: Callable[[], None],
        describe: Callable[[], dict[str, Any]],
    ) -> None:
        self.shared = shared
        self.runs = runs
        self.scheduler = scheduler
        self.reload = reload
        self.describe = describe  # the daemon's own part of `status`

    def on_request(self, request: dict[str, Any]) -> dict[str, Any]:
        """Called on a control-socket thread: hand over to the main loop and wait. A request
        the main loop has not taken when the wait ends is withdrawn, so that "busy; try again"
        never leaves a trigger or cancel to happen later as well."""
        reply: queue.Queue[dict[str, Any]] = queue.Queue()
        ticket = ControlTicket()
        self.shared.events.put(Control(request, reply, ticket))
        try:
            return reply.get(timeout=self.reply_timeout_s)
        except queue.Empty:
            pass
        with ticket.lock:
            if not ticket.taken:
                ticket.abandoned = True
                return {"ok": False, "error": "the daemon is busy; try again"}
        try:  # the main loop is answering it right now
            return reply.get(timeout=self.reply_timeout_s)
        except queue.Empty:
            return {"ok": False, "error": "the daemon took too long to answer; see its log"}

    def handle(self, event: Control) -> None:
        """On the main loop: answer one request (unless its client gave up on it)."""
        request, ticket = event.request, event.ticket
        if ticket is not None:
            with ticket.lock:
                if ticket.abandoned:
                    log.warning("control_request_expired", op=request.get("op"))
                    return
                ticket.taken = True
        try:
            answer = self.answer(request)
        except StoreUnavailableError as exc:
            answer = {"ok": False, "error": f"run store unavailable: {exc}"}
        except OrchestratorError as exc:
            answer = {"ok": False, "error": str(exc)}
        except Exception as exc:  # the client gets an answer, the loop goes on
            log.exception("control_request_failed", op=request.get("op"))
            answer = {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}
        event.reply.put(answer)

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "status":
            return {"ok": True, "status": self.status()}
        if op == "reload":
            self.reload()
            return {"ok": True}
        if op == "metrics":  # /metrics (orchestrator.web): the same snapshot as the textfile
            from orchestrator.metrics import snapshot

            return {"ok": True, "text": snapshot(self.status(), self.shared.store).decode()}
        if op == "run":  # read-only: one run's record
            record = self.shared.store.get_run(str(request.get("run_id", "")))
            return {"ok": True, "run": record.to_json() if record is not None else None}
        if op == "trigger":
            return self._trigger(str(request.get("job", "")))
        if op == "manifests":  # read-only: what is in effect (`orchestrator diff`)
            return {"ok": True, "manifests": self._manifests()}
        if op in ("suspend", "resume"):
            return self._pause(str(request.get("job", "")), op == "suspend")
        if op == "cancel":
            return self._cancel(str(request.get("run_id", "")))
        raise OrchestratorError(f"unknown request {op!r}")

    def _trigger(self, job: str) -> dict[str, Any]:
        if job not in self.shared.jobs:
            known = ", ".join(sorted(self.shared.jobs)) or "none"
            raise OrchestratorError(f"no job named {job!r}; known jobs: {known}")
        try:
            record = self.runs.dispatch(job, Trigger.MANUAL)
        except DeferredError as exc:
            return {"ok": True, "run_id": None, "deferred": str(exc)}
        assert record is not None  # a manual trigger that does not start raises
        return {"ok": True, "run_id": record.run_id, "state": str(record.state)}

    def _manifests(self) -> dict[str, Any]:
        """The manifests in effect as files have them (a runtime suspension left out), without
        their notify URLs (secrets)."""
        out = {}
        for name, view in self.shared.jobs.items():
            if view.loaded is None:
                continue
            dumped = view.loaded.manifest.model_dump(mode="json", exclude={"notify"})
            if name in self.shared.paused:
                dumped["suspend"] = False  # the overlay, not the file
            out[name] = {
                "path": str(view.path),
                "hash": view.loaded.content_hash,
                "manifest": dumped,
                "notify": notify_digest(getattr(view.loaded.manifest, "notify", None)),
            }
        return out

    def _pause(self, job: str, suspend: bool) -> dict[str, Any]:
        """Suspend a job at runtime (kept in the store over restarts), or resume it. A job
        suspended by its manifest stays so: the file says so."""
        shared = self.shared
        view = shared.jobs.get(job)
        if view is None or view.loaded is None:
            known = ", ".join(sorted(shared.jobs)) or "none"
            raise OrchestratorError(f"no job named {job!r}; known jobs: {known}")
        if not suspend and job not in shared.paused:
            if view.loaded.manifest.suspend:
                raise OrchestratorError(
                    f"job {job!r} is suspended by its manifest ({view.path}: suspend: true); "
                    "edit the file to resume it"
                )
            return {"ok": True, "job": job, "changed": False}
        if suspend and job in shared.paused:
            return {"ok": True, "job": job, "changed": False}
        if suspend:
            entry = {"since": utcnow().isoformat(timespec="seconds")}
            shared.require_store().set_job_state(job, "paused", entry)
            shared.paused[job] = entry
        else:
            shared.require_store().set_job_state(job, "paused", None)
            shared.paused.pop(job, None)
        log.info("job_suspended_at_runtime" if suspend else "job_resumed", job=job)
        self.reload()  # the reconcile applies (or lifts) the suspension
        return {"ok": True, "job": job, "changed": True}

    def _cancel(self, run_id: str) -> dict[str, Any]:
        run = self.shared.active.get(run_id)
        if run is not None:
            self.runs.cancel(run)
            return {"ok": True, "run_id": run_id}
        dropped = self.runs.followups.drop(run_id)
        if dropped is not None:
            return {
                "ok": True,
                "run_id": run_id,
                "retry_dropped": {"job": dropped.job, "attempt": dropped.attempt},
            }
        record = self.shared.store.get_run(run_id)
        if record is None:
            raise OrchestratorError(f"no run with id {run_id!r}")
        raise OrchestratorError(f"run {run_id} is not active (state {record.state})")

    def _fresh(self, runs: list[RunRecord]) -> list[RunRecord]:
        """Active runs as the store has them now: an executor's worker thread adds to a run's
        result while it goes on (array tasks ended, a fallback), which the daemon's own copy
        does not see. The daemon's copy where the store cannot answer."""
        fresh = []
        for run in runs:
            try:
                fresh.append(self.shared.store.get_run(run.run_id) or run)
            except StoreUnavailableError:
                fresh.append(run)
        return fresh

    def _since(self, name: str, view: JobView) -> Since | None:
        """What the job's ``expect`` is judged on (None without one, or with no store)."""
        if view.loaded is None:
            return None
        store = self.shared.store
        try:
            anchor = store.get_job_state(name, "anchor")
            return since_for(store, name, view.loaded.manifest, anchor)
        except StoreUnavailableError:
            return None

    def status(self) -> dict[str, Any]:
        shared = self.shared
        rows = []
        store_read_error: str | None = None
        for name, view in sorted(shared.jobs.items()):
            last: RunRecord | None = None
            if store_read_error is None:
                try:
                    last = shared.store.last_run(name)
                except StoreUnavailableError as exc:
                    # Status answers without the last runs rather than not at all.
                    store_read_error = str(exc)
            active = [r for r in shared.active.values() if r.job == name]
            since = None
            if store_read_error is None:
                active = self._fresh(active) if active else active
                since = self._since(name, view)
            row = job_row(view, self.scheduler.next_fire_time(name), last, active, since)
            row["pending_retries"] = self.runs.followups.pending(name)
            row["suspended_at_runtime"] = shared.paused.get(name)
            row["waiting_for_slot"] = next(
                (w for w in self.runs.slots.status() if w["job"] == name), None
            )
            rows.append(row)
        for path, err in sorted(shared.orphan_errors.items()):
            rows.append(job_row(JobView(path, None, err), None, None, []))
        daemon = {
            "running": True,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            **self.describe(),
            "jobs_dir": str(shared.settings.jobs_dir),
            "state_dir": str(shared.settings.state_dir),
            "jobs_dir_error": shared.dir_error,
            "active_runs": len(shared.active),
            "waiting_for_slot": len(self.runs.slots.queue),
            "executors": {name: ex.health() for name, ex in shared.executors.items()},
            "store": {
                **shared.outage.as_dict(),
                "deferred_events": len(shared.deferred),
                "read_error": store_read_error,
            },
        }
        return {"daemon": daemon, "jobs": rows}
