"""The daemon's side of notifications: after each run ends, and at each heartbeat (overdue
needs no run to happen), compare each job's problems with what was last announced
(:mod:`.transitions`) and queue the messages due (:mod:`.deliver`).

What was announced is kept per job in the run store (``notify`` in the job state), so a
restarted daemon neither repeats a failure message nor misses a recovery, and runs that ended
while no daemon was running are judged when it starts. A job whose notifications are first
turned on while it is failing gets one failure message.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import structlog

from orchestrator.clock import utcnow
from orchestrator.notify import transitions
from orchestrator.notify.deliver import Outbox
from orchestrator.notify.message import compose
from orchestrator.notify.model import Notify, effective
from orchestrator.status import JobView, overdue, since_for

log = structlog.get_logger("orchestrator.notify")

STATE_KEY = "notify"
HISTORY_LOOK = 20  # recent runs searched for the latest judged one


class Notifications:
    def __init__(
        self,
        outbox: Outbox,
        store: Callable[[], Any],
        daemon_default: Callable[[], Notify | None],
        retry_pending: Callable[[str, str], bool],
    ) -> None:
        self.outbox = outbox
        self._store = store
        self._default = daemon_default
        self._retry_pending = retry_pending  # (job, run_id) -> a retry of it is to come
        self.host = socket.gethostname()

    def check(self, jobs: dict[str, JobView], only: str | None = None) -> None:
        """Judge every job (or ``only`` that one) and queue the messages its change calls for."""
        for name, view in sorted(jobs.items()):
            if (only is None or name == only) and view.loaded is not None:
                self._check_job(name, view.loaded.manifest)

    def _check_job(self, name: str, manifest: Any) -> None:
        settings = effective(getattr(manifest, "notify", None), self._default())
        if not settings.active:
            return
        store = self._store()
        seen = transitions.Seen.from_json(store.get_job_state(name, STATE_KEY))
        judged = transitions.latest_judged(store.history(name, limit=HISTORY_LOOK))
        pending = judged is not None and self._retry_pending(name, judged.run_id)
        verdict = transitions.verdict(judged, pending)
        since = since_for(store, name, manifest, store.get_job_state(name, "anchor"))
        late = overdue(manifest, since, utcnow())
        new, events = transitions.step(seen, judged, verdict, late is not None)
        if new == seen:
            return
        for event in events:
            if event not in settings.on:
                continue
            run = None if event == "overdue" else judged
            text = compose(event, name, manifest.kind, self.host, run, late, settings.log_lines)
            self.outbox.put(name, event, text.title, text.body, settings.urls)
        # After the messages are queued (and their file written): a crash in between repeats
        # a message rather than losing one.
        store.set_job_state(name, STATE_KEY, new.to_json())
        if events:
            log.info("job_transition", job=name, problems=sorted(new.problems), events=events)
