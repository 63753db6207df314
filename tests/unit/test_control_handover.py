"""The daemon's hand-over of control requests from socket threads to its main loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.daemon import Daemon
from orchestrator.daemon.control import ControlHandler
from orchestrator.settings import Settings


def test_request_answered_busy_is_never_acted_on_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A control request whose client was told "busy; try again" is dropped, not run later
    by the main loop (a retried `trigger` must not start two runs)."""
    daemon = Daemon(Settings(jobs_dir=tmp_path / "jobs.d", state_dir=tmp_path / "state"))
    monkeypatch.setattr(ControlHandler, "reply_timeout_s", 0.05)
    acted: list[dict[str, Any]] = []
    handler = daemon.control_handler
    monkeypatch.setattr(handler, "answer", lambda request: acted.append(request) or {"ok": True})
    answer = handler.on_request({"op": "trigger", "job": "x"})  # nobody runs the main loop
    assert answer["ok"] is False
    assert "busy" in answer["error"]
    daemon._handle(daemon.events.get_nowait())  # the main loop gets to it afterwards
    assert acted == []
