"""Times, durations and exit codes as people read them in the command line's tables: local
times in a job's own time zone, relative times ("in 12 min", "3 h ago"), short durations, and
exit codes as a shell shows them (143 for SIGTERM)."""

from __future__ import annotations

import signal
from datetime import datetime, tzinfo


def ago(when: datetime, now: datetime) -> str:
    """``in 12 min`` / ``3 h ago`` / ``now``."""
    seconds = (when - now).total_seconds()
    text = span(abs(seconds))
    if abs(seconds) < 1:
        return "now"
    return f"in {text}" if seconds > 0 else f"{text} ago"


def span(seconds: float) -> str:
    """A rounded length of time: ``42 s``, ``12 min``, ``3 h``, ``2 d``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def took(seconds: float | None) -> str:
    """A run's duration: ``0.4 s``, ``12 s``, ``3 min 5 s``, ``2 h 10 min``."""
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def clock(when: datetime, zone: tzinfo | None, now: datetime) -> str:
    """``03:00 CET`` today, ``Tue 03:00 CET`` within a week, else the date too."""
    local = when.astimezone(zone) if zone is not None else when.astimezone()
    here = now.astimezone(local.tzinfo)
    days = abs((local.date() - here.date()).days)
    if days == 0:
        return f"{local:%H:%M:%S %Z}"
    if days < 7:
        return f"{local:%a %H:%M %Z}"
    return f"{local:%Y-%m-%d %H:%M %Z}"


def exit_text(code: int | None) -> str:
    """An exit code as a shell shows it: ``143 (SIGTERM)`` for a run killed by signal 15."""
    if code is None:
        return "-"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"{128 - code} ({name})"
    return str(code)
