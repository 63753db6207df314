"""Delivery: an outbox a worker thread empties through Apprise, so that a slow or dead mail
server never holds up the daemon's loop or a run.

Each message is sent to each of its URLs on its own; a URL that fails is tried again after
``backoff_s`` x 3^(n-1) (capped at an hour) until ``max_attempts`` (eight: about two and a half
hours with the default 10 s), then given up with an error in the log. A URL that can never
work (an unset ``${VAR}``, a form Apprise refuses) is given up at once. What is still to be
sent when the daemon stops is kept in ``notify-outbox.json`` in the state directory (mode 0600:
it holds the URLs) and sent by the next daemon.

Nothing here logs a URL: :func:`~orchestrator.notify.model.redact` names it, and what Apprise
itself says about a failure is scrubbed of the URL's secret parts before it is logged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog

from orchestrator.atomic import write_json
from orchestrator.notify.model import VARIABLE, quiet_apprise, redact, scrub

log = structlog.get_logger("orchestrator.notify")

MAX_BACKOFF_S = 3600.0
ERROR_CHARS = 300


@dataclass(frozen=True)
class Attempt:
    """What one try of one URL came to: ``error`` None when delivered; ``permanent`` when no
    later try can succeed."""

    error: str | None = None
    permanent: bool = False


SendFn = Callable[[str, str, str], Attempt]


@dataclass
class Pending:
    job: str
    event: str
    title: str
    body: str
    urls: list[str]
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    attempts: int = 0
    due: float = 0.0  # wall-clock seconds: kept across a restart
    created: float = field(default_factory=time.time)


def expand(url: str) -> tuple[str, str | None]:
    """``url`` with ``${VAR}`` filled in from the environment, and the first unset name."""
    missing: list[str] = []

    def value(match: Any) -> str:
        name = match.group(1)
        if name not in os.environ:
            missing.append(name)
            return ""
        return os.environ[name]

    return VARIABLE.sub(value, url), (missing[0] if missing else None)


def apprise_send(url: str, title: str, body: str) -> Attempt:
    """One message to one Apprise URL."""
    import apprise

    shown = redact(url)
    expanded, missing = expand(url)
    if missing:
        return Attempt(f"{shown}: ${{{missing}}} is not set in the daemon's environment", True)
    sender = apprise.Apprise()
    if not sender.add(expanded):
        return Attempt(f"{shown}: Apprise does not accept this URL", True)
    with apprise.LogCapture(level=logging.WARNING) as said:  # type: ignore[no-untyped-call]
        delivered = sender.notify(title=title, body=body)
    if delivered:
        return Attempt()
    lines = [ln.split(" - ", 2)[-1] for ln in said.getvalue().splitlines() if ln.strip()]
    detail = scrub("; ".join(lines[-2:]), [url, expanded])[:ERROR_CHARS]
    return Attempt(f"{shown}: {detail or 'not delivered'}")


class Outbox:
    """Messages waiting to be sent; thread-safe. ``path`` None keeps them in memory only."""

    def __init__(
        self,
        path: Path | None,
        send: SendFn = apprise_send,
        backoff_s: float = 10.0,
        max_attempts: int = 8,
    ) -> None:
        self.path = path
        self.send = send
        self.backoff_s = backoff_s
        self.max_attempts = max_attempts
        self._pending: list[Pending] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.abandoned = 0
        self.last_error: str | None = None
        # Apprise's own log lines may name a URL's parts: they are captured per attempt and
        # scrubbed, never passed on to the daemon's log as they are.
        quiet_apprise()

    # ------------------------------------------------------------ the daemon's side

    def put(self, job: str, event: str, title: str, body: str, urls: tuple[str, ...]) -> None:
        item = Pending(job, event, title, body, list(urls))
        with self._cond:
            self._pending.append(item)
            self._save()
            self._cond.notify()
        log.info("notification_queued", job=job, notify_event=event, urls=[redact(u) for u in urls])

    def start(self) -> None:
        """Take up what a previous daemon left in the file, then send in the background."""
        self._load()
        self._thread = threading.Thread(target=self._work, name="notify", daemon=True)
        self._thread.start()

    def stop(self, flush_s: float = 5.0) -> None:
        """Give what is due ``flush_s`` to go out, then stop; the rest stays in the file."""
        deadline = time.monotonic() + flush_s
        with self._cond:
            while self._due_now() and time.monotonic() < deadline:
                self._cond.wait(0.1)
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=max(0.5, deadline - time.monotonic()))
        with self._cond:
            self._save()
            if self._pending:
                log.info("notifications_kept", pending=len(self._pending), path=str(self.path))

    def status(self) -> dict[str, Any]:
        with self._cond:
            return {
                "pending": len(self._pending),
                "retrying": sum(1 for p in self._pending if p.attempts),
                "delivered": self.delivered,
                "abandoned": self.abandoned,
                "last_error": self.last_error,
            }

    # ------------------------------------------------------------ the worker

    def _due_now(self) -> bool:
        now = time.time()
        return any(p.due <= now for p in self._pending)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._due_now():
                    wait = min((p.due for p in self._pending), default=time.time() + 60)
                    self._cond.wait(max(0.05, min(60.0, wait - time.time())))
                if self._stop:
                    return
                now = time.time()
                item = next(p for p in self._pending if p.due <= now)
            try:
                self._attempt(item)
            except Exception:  # never lose the thread: a bug here must not end delivery
                log.exception("notification_attempt_failed", job=item.job)
                with self._cond:
                    item.attempts += 1
                    item.due = time.time() + self._delay(item.attempts)

    def _attempt(self, item: Pending) -> None:
        results = {url: self.send(url, item.title, item.body) for url in list(item.urls)}
        with self._cond:
            item.attempts += 1
            for url, attempt in results.items():
                if attempt.error is None:
                    item.urls.remove(url)
                    self.delivered += 1
                    log.info(
                        "notification_sent", job=item.job, notify_event=item.event, url=redact(url)
                    )
                    continue
                self.last_error = attempt.error
                if attempt.permanent or item.attempts >= self.max_attempts:
                    item.urls.remove(url)
                    self.abandoned += 1
                    log.error(
                        "notification_given_up",
                        job=item.job,
                        notify_event=item.event,
                        error=attempt.error,
                        attempts=item.attempts,
                    )
                else:
                    log.warning(
                        "notification_failed",
                        job=item.job,
                        notify_event=item.event,
                        error=attempt.error,
                        attempt=item.attempts,
                        retry_in_s=round(self._delay(item.attempts), 1),
                    )
            if item.urls:
                item.due = time.time() + self._delay(item.attempts)
            else:
                self._pending.remove(item)
            self._save()
            self._cond.notify_all()

    def _delay(self, attempts: int) -> float:
        return float(min(MAX_BACKOFF_S, self.backoff_s * 3 ** max(0, attempts - 1)))

    # ------------------------------------------------------------ the file

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            if self._pending:
                write_json(self.path, [asdict(p) for p in self._pending])
            else:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
        except OSError as exc:  # a full disk: they are still in memory
            log.warning("notify_outbox_write_failed", path=str(self.path), error=str(exc))

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        import json

        try:
            data = json.loads(self.path.read_text())
            self._pending = [Pending(**d) for d in data]
        except (OSError, ValueError, TypeError) as exc:
            log.error("notify_outbox_unreadable", path=str(self.path), error=str(exc))
            return
        log.info("notifications_resumed", pending=len(self._pending))
