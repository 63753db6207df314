"""Durations in manifests: strings such as ``30s``, ``10m``, ``6h``, ``2d`` or ``1h30m``."""

from __future__ import annotations

import re

from orchestrator.errors import DurationError

_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$")

VALID_FORM = "a number with a unit (ms, s, m, h, d, w), e.g. '90s', '10m', '6h', '1h30m', '2d'"


def parse_duration_s(text: str | int | float) -> float:
    """Return the duration in seconds; bare numbers are seconds.

    Raises DurationError naming the valid form when ``text`` is not a duration.
    """
    if isinstance(text, bool):
        raise DurationError(f"expected a duration, got {text!r}; use {VALID_FORM}")
    if isinstance(text, int | float):
        if text < 0:
            raise DurationError(f"a duration cannot be negative: {text!r}")
        return float(text)
    if not isinstance(text, str):
        raise DurationError(f"expected a duration, got {type(text).__name__}; use {VALID_FORM}")
    compact = text.strip().replace(" ", "").lower()
    if not compact or not _WHOLE.match(compact):
        raise DurationError(f"{text!r} is not a duration; use {VALID_FORM}")
    return sum(float(n) * _UNITS_S[u] for n, u in _PART.findall(compact))


def format_duration(seconds: float) -> str:
    """Render seconds back into the shortest exact manifest form (``5400`` -> ``1h30m``)."""
    if seconds == 0:
        return "0s"
    if seconds != int(seconds):
        return f"{seconds:g}s"
    rest = int(seconds)
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out)
