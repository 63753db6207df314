"""Log output: JSON lines off a TTY, console on a TTY, stdlib routed through the same renderer."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
from collections.abc import Iterator
from datetime import datetime

import pytest
import structlog

from orchestrator.logs import configure_logging, get_logger


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("ORCH_LOG_LEVEL", raising=False)
    monkeypatch.delenv("ORCH_LOG_FORMAT", raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)
    structlog.reset_defaults()


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_bound_keys() -> None:
    """Off a TTY each event is one JSON object with event, level, UTC timestamp and bound keys."""
    out = io.StringIO()
    configure_logging(stream=out)
    log = get_logger(job="o2-daily", run_id="r-1")
    log.info("run_started", pid=123)
    log.bind(slurm_job_id="4242").warning("run_slow\nsecond line")

    first, second = _lines(out)
    assert first["event"] == "run_started"
    assert first["level"] == "info"
    assert first["job"] == "o2-daily"
    assert first["run_id"] == "r-1"
    assert first["pid"] == 123
    stamp = datetime.fromisoformat(str(first["timestamp"]).replace("Z", "+00:00"))
    assert stamp.utcoffset() is not None
    assert stamp.utcoffset().total_seconds() == 0
    assert second["event"] == "run_slow\nsecond line"
    assert second["slurm_job_id"] == "4242"
    assert second["level"] == "warning"


def test_a_named_logger_keeps_its_name() -> None:
    """structlog.get_logger("orchestrator.daemon") writes ``logger`` with that name (it was
    dropped); an unnamed logger writes none, a bound key of that name is kept."""
    out = io.StringIO()
    configure_logging(stream=out)
    structlog.get_logger("orchestrator.daemon").info("named")
    structlog.get_logger().info("unnamed")
    structlog.get_logger("orchestrator.slurm").info("bound", logger="mine")
    named, unnamed, bound = _lines(out)
    assert named["logger"] == "orchestrator.daemon"
    assert "logger" not in unnamed
    assert bound["logger"] == "mine"


def test_logger_created_before_configure_uses_later_configuration() -> None:
    """A module-level logger made at import time writes with the configuration set later."""
    log = get_logger(job="early")
    out = io.StringIO()
    configure_logging(stream=out)
    log.info("hello")
    (line,) = _lines(out)
    assert line["job"] == "early"
    assert line["event"] == "hello"


def test_level_filters_and_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """Events below the level are dropped, and ORCH_LOG_LEVEL wins over the argument."""
    out = io.StringIO()
    configure_logging(level="warning", stream=out)
    get_logger().info("dropped")
    get_logger().error("kept")
    assert [line["event"] for line in _lines(out)] == ["kept"]

    monkeypatch.setenv("ORCH_LOG_LEVEL", "debug")
    out = io.StringIO()
    configure_logging(level="warning", stream=out)
    get_logger().debug("now_kept")
    assert [line["event"] for line in _lines(out)] == ["now_kept"]


def test_exception_stays_on_one_line() -> None:
    """A logged traceback is a field of the single JSON line, not extra lines."""
    out = io.StringIO()
    configure_logging(stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger(job="x").exception("run_failed")
    (line,) = _lines(out)
    assert "RuntimeError: boom" in str(line["exception"])


def test_stdlib_warnings_routed_as_json_and_info_dropped() -> None:
    """Stdlib loggers (APScheduler, watchdog) come out as JSON lines at WARNING and above only."""
    out = io.StringIO()
    configure_logging(level="debug", stream=out)
    logging.getLogger("apscheduler.scheduler").info("Added job %s", "x")
    logging.getLogger("apscheduler.scheduler").warning("Run time of job %s was missed", "x")
    (line,) = _lines(out)
    assert line["event"] == "Run time of job x was missed"
    assert line["level"] == "warning"
    assert line["logger"] == "apscheduler.scheduler"
    assert "timestamp" in line


def test_reconfigure_does_not_duplicate_stdlib_output() -> None:
    """Calling configure_logging twice leaves one stdlib handler of ours, so no doubled lines."""
    configure_logging(stream=io.StringIO())
    out = io.StringIO()
    configure_logging(stream=out)
    logging.getLogger("watchdog").error("inotify limit reached")
    assert len(_lines(out)) == 1


def test_console_on_a_tty_and_format_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a real pseudo-terminal the output is the console layout; ORCH_LOG_FORMAT=json wins."""
    leader, follower = pty.openpty()
    try:
        with os.fdopen(follower, "w", closefd=False) as tty:
            configure_logging(stream=tty)
            get_logger(job="sync").info("console_event")
            tty.flush()
            text = os.read(leader, 65536).decode()
            assert "console_event" in text
            assert "job" in text
            with pytest.raises(json.JSONDecodeError):
                json.loads(text.splitlines()[0])

            monkeypatch.setenv("ORCH_LOG_FORMAT", "json")
            configure_logging(stream=tty)
            get_logger(job="sync").info("json_event")
            tty.flush()
            line = os.read(leader, 65536).decode().strip()
            assert json.loads(line)["event"] == "json_event"
    finally:
        os.close(leader)
        os.close(follower)


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown level or format is a ValueError naming the valid values."""
    with pytest.raises(ValueError, match="valid: "):
        configure_logging(level="loud", stream=io.StringIO())
    monkeypatch.setenv("ORCH_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="ORCH_LOG_FORMAT"):
        configure_logging(stream=io.StringIO())
