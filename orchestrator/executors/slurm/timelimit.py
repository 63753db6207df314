"""``executor.slurm.time``: a Slurm time limit, read as Slurm users write it.

A bare number is minutes, as in ``sbatch --time=90`` (before issue 8 it was read as seconds, the
way every other duration in a manifest is, which turned a Slurm user's 90 minutes into 2). Also
accepted: Slurm's own forms ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``,
``D-HH:MM:SS``, and durations with units (``90m``, ``2h``, ``1h30m``).

Bounds: at least one minute (Slurm counts whole minutes, and ``0`` would ask for no limit at
all) and at most ``MAX_TIME_LIMIT_S`` (365 days: longer is a typo, e.g. seconds written where
minutes are meant). Slurm's ``UNLIMITED``/``INFINITE`` are refused on purpose: leaving the field
out gives the partition's default limit, which is what a job without a limit gets anyway, and an
unlimited job would hold a run (and max_queued) forever.

The value is held in seconds (what ``render.format_time_limit`` rounds up to whole minutes).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

from orchestrator.durations import format_duration, parse_duration_s
from orchestrator.errors import DurationError

MIN_TIME_LIMIT_S = 60
MAX_TIME_LIMIT_S = 365 * 86400

VALID_FORMS = (
    "minutes (90), Slurm's MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS ('1:30:00', "
    "'2-12:00'), or a duration with units ('90m', '2h', '1h30m')"
)

# ASCII digits only (a bare \d also matches other scripts' digits, which int() reads). Fields
# after the first are at most two digits, their ranges checked in _slurm_form_s; the first has
# at most 9 (more is over the maximum anyway: _TOO_MANY_DIGITS says so).
_CLOCK = re.compile(r"^(\d{1,9})(?::(\d{1,2}))?(?::(\d{1,2}))?$", re.ASCII)  # MM[:SS], H:M:S
_DAYS = re.compile(r"^(\d{1,9})-(\d{1,2})(?::(\d{1,2}))?(?::(\d{1,2}))?$", re.ASCII)  # D-HH...
_TOO_MANY_DIGITS = re.compile(r"^\d{10,}([-:]|$)", re.ASCII)
_HAS_UNIT = re.compile(r"[a-z]", re.IGNORECASE)
# The form orchestrator.durations reads (its JSON Schema pattern), checked here first so that
# its errors can only be about the bound.
_WITH_UNITS = re.compile(r"^(\d+(\.\d+)?\s*(ms|s|m|h|d|w)\s*)+$", re.ASCII)
_UNLIMITED = {"unlimited", "infinite", "-1"}


def _slurm_form_s(text: str) -> int | None:
    """Seconds of one of Slurm's own forms, or None when ``text`` is none of them. The first
    field may be any number (``90:00`` is 90 minutes); the fields after it are clock fields."""
    if m := _DAYS.match(text):
        days, hours = int(m[1]), int(m[2])
        minutes, seconds = int(m[3] or 0), int(m[4] or 0)
        if hours > 23:
            raise DurationError(
                f"{_shown(text)}: the hours after 'D-' must be 0-23; use {VALID_FORMS}"
            )
        clock = [minutes, seconds]
    elif m := _CLOCK.match(text):
        parts = [int(p) for p in m.groups() if p is not None]
        days = 0
        if len(parts) == 3:  # HH:MM:SS
            hours, minutes, seconds = parts
            clock = [minutes, seconds]
        else:  # MM or MM:SS
            hours, minutes, seconds = 0, parts[0], parts[1] if len(parts) == 2 else 0
            clock = [seconds]
    else:
        return None
    if any(field > 59 for field in clock):
        raise DurationError(
            f"{_shown(text)}: minutes and seconds after the first field must be 0-59; "
            f"use {VALID_FORMS}"
        )
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def parse_time_limit_s(value: Any) -> float:
    """The time limit in seconds; raises DurationError naming the valid forms."""
    if isinstance(value, bool):
        raise DurationError(f"expected a time limit, got {_shown(value)}; use {VALID_FORMS}")
    if isinstance(value, float):
        if not value.is_integer():
            # YAML's 1.5: Slurm has no fractional minutes, and reading it as 1m30s is a guess.
            raise DurationError(
                f"{_shown(value)} is not a whole number of minutes; use {VALID_FORMS}"
            )
        value = int(value)
    if isinstance(value, int):
        seconds: float = value * 60
    elif isinstance(value, str):
        seconds = _text_s(value)
    else:
        raise DurationError(f"expected a time limit, got {type(value).__name__}; use {VALID_FORMS}")
    if seconds < MIN_TIME_LIMIT_S:
        raise DurationError(
            f"{_shown(value)} is under a minute; Slurm time limits count whole minutes (and 0 "
            "would mean no limit): use at least 1 (one minute) or '1m'"
        )
    if seconds > MAX_TIME_LIMIT_S:
        raise _over_maximum(value)
    return float(seconds)


def _text_s(value: str) -> float:
    """A time limit written as text: Slurm's clock forms or durations with units."""
    text = value.strip()
    if text.lower() in _UNLIMITED:
        raise DurationError(
            f"{_shown(value)}: unlimited time is not accepted; leave executor.slurm.time "
            f"out for the partition's default limit, or use {VALID_FORMS}"
        )
    if _HAS_UNIT.search(text):
        if not _WITH_UNITS.match(text):
            raise DurationError(f"{_shown(value)} is not a time limit; use {VALID_FORMS}")
        try:
            return parse_duration_s(text)
        except DurationError as exc:  # the form matched: only the bound is left
            raise _over_maximum(value) from exc
    if _TOO_MANY_DIGITS.match(text):
        raise _over_maximum(value)
    found = _slurm_form_s(text)
    if found is None:
        raise DurationError(f"{_shown(value)} is not a time limit; use {VALID_FORMS}")
    return found


def _shown(value: Any) -> str:
    """``value`` for an error message, cut short: YAML can carry a 5000-digit number, whose
    repr() would itself raise ValueError (Python's int-to-text digit limit)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return "a number of more than 38 digits"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:36]}..."


def _over_maximum(value: Any) -> DurationError:
    return DurationError(
        f"{_shown(value)} is over the maximum of 365 days ({MAX_TIME_LIMIT_S // 60} minutes, "
        "'365d'); a bare number is minutes, as in sbatch --time"
    )


_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_TIME_LIMIT_S // 60,
            "description": "minutes, as in sbatch --time=90",
        },
        {
            "type": "string",
            "pattern": r"^\s*\d+(:[0-5]?\d){0,2}\s*$",
            "description": "minutes as digits, MM:SS or HH:MM:SS",
        },
        {
            "type": "string",
            "pattern": r"^\s*\d+-([01]?\d|2[0-3])(:[0-5]?\d){0,2}\s*$",
            "description": "D-HH, D-HH:MM or D-HH:MM:SS",
        },
        {
            "type": "string",
            "pattern": r"^\s*(\d+(\.\d+)?\s*(ms|s|m|h|d|w)\s*)+$",
            "description": "a duration with units: '90m', '2h', '1h30m'",
        },
    ],
    "description": (
        "Slurm wall-clock limit, rounded up to whole minutes: a bare number is minutes (as in "
        "sbatch); or MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS; or '90m', '2h', '1h30m'. "
        "At least one minute, at most 365 days; UNLIMITED is refused (leave the field out for "
        "the partition's default)."
    ),
}

# Held as float seconds; written back in the exact duration-with-units form ('1h30m'), which
# reads back the same (a bare number would read back as minutes).
SlurmTimeLimit = Annotated[
    float,
    BeforeValidator(parse_time_limit_s),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(_SCHEMA),
]
