"""What the daemon tells people without being asked: notifications of job transitions
(:mod:`orchestrator.notify`), the metrics textfile (:mod:`orchestrator.metrics`), and the
daemon-wide configuration file they read (:mod:`orchestrator.config`). The loop calls it at
start, after each run ends, at each heartbeat, on reload and at shutdown; each step logs its
own trouble and never stops the loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from orchestrator.config import ConfigFile, config_path
from orchestrator.errors import OrchestratorError, StoreUnavailableError
from orchestrator.notify.deliver import Outbox
from orchestrator.notify.watch import Notifications
from orchestrator.settings import env_float

from .control import ControlHandler
from .state import Shared

log = structlog.get_logger("orchestrator.daemon")

OUTBOX_NAME = "notify-outbox.json"


class Operations:
    def __init__(
        self,
        shared: Shared,
        control: ControlHandler,
        retry_pending: Callable[[str, str], bool],
    ) -> None:
        self.shared = shared
        self._status = control.status
        self._ask = control.on_request
        self.web: Any = None
        settings = shared.settings
        self.config = ConfigFile(config_path(settings.jobs_dir))
        self.outbox = Outbox(
            settings.state_dir / OUTBOX_NAME,
            backoff_s=env_float("ORCH_NOTIFY_BACKOFF_S", 10.0),
        )
        self.notifications = Notifications(
            self.outbox,
            lambda: shared.store,
            lambda: self.config.current.notify,
            retry_pending,
        )
        self._config_error: str | None = None

    def start(self) -> None:
        self.refresh_config()
        self.outbox.start()
        self.check()
        if self.shared.settings.http_address:
            self.start_web(self.shared.settings.http_address)

    def start_web(self, text: str) -> None:
        """The HTTP listener (orchestrator.web). One that cannot listen (the port is taken)
        stops the start with one line: it was asked for, and running without it would hide
        the daemon from whoever relies on the page or on /metrics."""
        from orchestrator.web.access import parse_address, token_for
        from orchestrator.web.server import WebServer

        address = parse_address(text)
        token = token_for(address, self.shared.settings.state_dir)
        self.web = WebServer(address, self._ask, token)
        try:
            self.web.start()
        except OSError as exc:
            raise OrchestratorError(
                f"--http-address {text}: cannot listen there: {exc.strerror or exc}"
            ) from exc

    def stop(self) -> None:
        if self.web is not None:
            self.web.stop()
        self.outbox.stop()

    def run_ended(self, job: str) -> None:
        if not self.shared.outage.active:
            self.shared.step("notify", self.notifications.check, self.shared.jobs, job)

    def check(self) -> None:
        if not self.shared.outage.active:
            self.shared.step("notify", self.notifications.check, self.shared.jobs)

    def heartbeat(self) -> None:
        self.refresh_config()
        self.check()
        if self.shared.settings.metrics_textfile is not None:
            self.write_metrics()

    def refresh_config(self) -> None:
        """Re-read the configuration file if it changed; a new problem with it is logged once."""
        if self.config.refresh():
            log.info("config_loaded", path=str(self.config.path))
        if self.config.error != self._config_error:
            self._config_error = self.config.error
            if self.config.error:
                log.error("config_invalid", path=str(self.config.path), error=self.config.error)
            self.shared.notify_status()

    def status(self) -> dict[str, Any]:
        """The daemon's part of ``status`` for these (never a URL: the outbox's errors name
        URLs redacted)."""
        return {
            "config": {"path": str(self.config.path), "error": self.config.error},
            "notifications": self.outbox.status(),
            "http": {"url": self.web.url, "token_required": self.web.token is not None}
            if self.web is not None and self.web.running
            else None,
        }

    def write_metrics(self) -> None:
        """The metrics textfile (``ORCH_METRICS_TEXTFILE``); a failure is logged, never more."""
        from orchestrator.metrics import write_textfile

        path = self.shared.settings.metrics_textfile
        assert path is not None
        try:
            write_textfile(path, self._status(), self.shared.store)
        except (OSError, ImportError, StoreUnavailableError) as exc:
            log.warning("metrics_write_failed", path=str(path), error=str(exc))


def systemd_status(shared: Shared, waiting: int) -> str:
    """The one line systemd shows as the daemon's STATUS (``systemctl status``)."""
    invalid = sum(1 for v in shared.jobs.values() if v.error) + len(shared.orphan_errors)
    text = f"{len(shared.jobs)} jobs, {len(shared.active)} running, {invalid} invalid manifests"
    if waiting:
        text += f", {waiting} waiting for a free slot"
    for executor in shared.executors.values():
        note = executor.status_note()
        if note:
            text += f"; {note}"
    store_problem = shared.outage.summary()
    if store_problem:
        text = f"{store_problem}; {text}"
    if shared.dir_error:
        return f"jobs directory refused: {shared.dir_error}"
    if invalid:
        first = next(
            (str(v.error) for v in shared.jobs.values() if v.error),
            str(next(iter(shared.orphan_errors.values()), "")),
        )
        text += f"; {first.splitlines()[0]}"
    return text
