"""Durations in manifests: strings such as ``30s``, ``10m``, ``6h``, ``2d`` or ``1h30m``.

Every duration is at most ``MAX_DURATION_S`` (365 days). A longer one is a typo (a unit left
out, seconds written where days were meant), and unbounded ones overflowed: ``datetime`` only
reaches the year 9999 and ``timedelta`` 999,999,999 days, so a ``retry_backoff`` of 10^12 days
passed validation and then raised OverflowError in the daemon on every start (issue 8).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

from orchestrator.errors import DurationError

_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
# Spaces only between a number and its unit or between parts, as the JSON schema says:
# '1h 30m' is a duration, '30 m s' (which, spaces dropped, would read as 30ms) is not.
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d|w)\s*)+$")

MAX_DURATION_S = 365 * 86400.0

VALID_FORM = "a number with a unit (ms, s, m, h, d, w), e.g. '90s', '10m', '6h', '1h30m', '2d'"


def parse_duration_s(text: str | int | float) -> float:
    """Return the duration in seconds; bare numbers are seconds.

    Raises DurationError naming the valid form when ``text`` is not a duration, and the bound
    when it is negative, not finite or longer than ``MAX_DURATION_S``.
    """
    if isinstance(text, bool):
        raise DurationError(f"expected a duration, got {text!r}; use {VALID_FORM}")
    if isinstance(text, int):
        # Compared as an int: float() of a 400-digit YAML integer raises OverflowError,
        # which Pydantic does not turn into a field error.
        if text < 0:
            raise DurationError(f"a duration cannot be negative: {text!r}")
        return _bounded(text, float(text) if text <= MAX_DURATION_S else math.inf)
    if isinstance(text, float):
        if math.isnan(text):  # YAML's .nan
            raise DurationError(f"a duration must be a number, got {text!r}; use {VALID_FORM}")
        if text < 0:
            raise DurationError(f"a duration cannot be negative: {text!r}")
        return _bounded(text, text)
    if not isinstance(text, str):
        raise DurationError(f"expected a duration, got {type(text).__name__}; use {VALID_FORM}")
    compact = text.strip()  # units are lower-case, as the JSON Schema's pattern says
    if not compact or not _WHOLE.match(compact):
        raise DurationError(f"{text!r} is not a duration; use {VALID_FORM}")
    seconds = sum(float(n) * _UNITS_S[u] for n, u in _PART.findall(compact))
    return _bounded(text, seconds)


def _bounded(text: object, seconds: float) -> float:
    """``seconds``, or DurationError when it is over the bound (inf included)."""
    if not seconds <= MAX_DURATION_S:
        shown = repr(text) if len(repr(text)) <= 40 else f"{repr(text)[:36]}..."
        raise DurationError(
            f"{shown} is longer than {format_duration(MAX_DURATION_S)}, the longest duration "
            "a manifest may give"
        )
    return float(seconds)


def format_duration(seconds: float) -> str:
    """Render seconds back into the shortest exact manifest form (``5400`` -> ``1h30m``)."""
    if seconds == 0:
        return "0s"
    if seconds != int(seconds):
        # repr is the shortest text that reads back exactly; Decimal spells it without an
        # exponent ('1e-07' would not parse), where '{:g}' would round to six digits.
        return f"{Decimal(repr(seconds)):f}s"
    rest = int(seconds)
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out)
