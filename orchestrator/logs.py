"""Logging: structlog, JSON lines off a TTY, a readable console layout on a TTY.

Under systemd, scrontab or a pipe the daemon writes one JSON object per line (``event``,
``level``, ``timestamp`` in ISO 8601 UTC, and every bound key such as ``job`` and ``run_id``), so
``jq`` and log shippers can read it. In a terminal it uses structlog's ConsoleRenderer.

Libraries that log through the standard library (APScheduler, watchdog) are routed through the
same renderer at WARNING and above, so a JSON stream stays one object per line and their
chatter at INFO does not drown our own events.

Environment overrides (they win over the arguments, so a deployed unit can be made verbose
without editing its command line): ``ORCH_LOG_LEVEL`` (debug, info, warning, error, critical)
and ``ORCH_LOG_FORMAT`` (``json`` or ``console``).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import FilteringBoundLogger, Processor

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
FORMATS = ("json", "console")

#: Standard-library loggers below this level are dropped (APScheduler logs every job at INFO).
STDLIB_MIN_LEVEL = logging.WARNING

_HANDLER_MARK = "_orchestrator_handler"


def _parse_level(value: str, source: str) -> int:
    try:
        return LEVELS[value.strip().lower()]
    except KeyError:
        raise ValueError(
            f"{source}: unknown log level {value!r}; valid: {', '.join(sorted(LEVELS))}"
        ) from None


def _want_json(json: bool | None, stream: TextIO) -> bool:
    env_format = os.environ.get("ORCH_LOG_FORMAT", "").strip().lower()
    if env_format:
        if env_format not in FORMATS:
            raise ValueError(
                f"ORCH_LOG_FORMAT: unknown log format {env_format!r}; valid: {', '.join(FORMATS)}"
            )
        return env_format == "json"
    if json is not None:
        return json
    isatty = getattr(stream, "isatty", None)
    try:
        return not (callable(isatty) and isatty())
    except (ValueError, OSError):  # a closed or odd stream: not a terminal
        return True


def configure_logging(
    level: str = "info", json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog and the standard library's root logger; safe to call again.

    ``json=None`` picks JSON when ``stream`` is not a TTY. ``stream`` defaults to sys.stderr as
    it is at call time. Raises ValueError for an unknown level or format (argument or env).
    """
    out = sys.stderr if stream is None else stream
    env_level = os.environ.get("ORCH_LOG_LEVEL", "").strip()
    level_no = (
        _parse_level(env_level, "ORCH_LOG_LEVEL") if env_level else _parse_level(level, "level")
    )
    as_json = _want_json(json, out)

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Processor
    if as_json:
        # Tracebacks become one string field; json.dumps escapes its newlines.
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_colors_ok(out))

    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        logger_factory=_NamedWriteLoggerFactory(file=out),
        context_class=dict,
        cache_logger_on_first_use=False,
    )

    handler = logging.StreamHandler(out)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    stdlib_level = max(level_no, STDLIB_MIN_LEVEL)
    handler.setLevel(stdlib_level)
    root.setLevel(stdlib_level)
    logging.captureWarnings(True)


class _NamedWriteLogger(structlog.WriteLogger):
    """structlog's WriteLogger that keeps the name it was created with
    (``structlog.get_logger("orchestrator.daemon")``), for the ``logger`` field."""

    name: str | None = None


class _NamedWriteLoggerFactory(structlog.WriteLoggerFactory):
    def __call__(self, *args: Any) -> _NamedWriteLogger:
        logger = _NamedWriteLogger(self._file)
        logger.name = str(args[0]) if args and args[0] is not None else None
        return logger


def _add_logger_name(logger: Any, method_name: str, event_dict: Any) -> Any:
    """``logger``: the name a structlog logger was created with (stdlib records carry theirs
    through ``add_logger_name``); none without one."""
    name = getattr(logger, "name", None)
    if name and "logger" not in event_dict:
        event_dict["logger"] = name
    return event_dict


def _colors_ok(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def get_logger(**bound: Any) -> FilteringBoundLogger:
    """A structlog logger with ``bound`` keys on every event: ``get_logger(job="sync")``.

    The logger is lazy: one created at import time uses whatever configure_logging set later.
    """
    logger: FilteringBoundLogger = structlog.get_logger(**bound)
    return logger
