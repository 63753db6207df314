"""Durations in manifests: parsing '90s' / '1h30m' / bare numbers, and writing them back."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.durations import MAX_DURATION_S, VALID_FORM, format_duration, parse_duration_s
from orchestrator.errors import DurationError

UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("10m", 600),
        ("6h", 6 * 3600),
        ("2d", 2 * 86400),
        ("1w", 7 * 86400),
        ("1h30m", 90 * 60),
        ("1d2h3m4s", 86400 + 2 * 3600 + 3 * 60 + 4),
        ("500ms", 0.5),
        ("1.5h", 5400),
        (" 1h 30m ", 5400),
        ("1 h", 3600),
        ("0s", 0),
        (90, 90),
        (2.5, 2.5),
        (0, 0),
    ],
)
def test_parse_known_values(text: str | int | float, seconds: float) -> None:
    """Each unit, combinations of units, spaces and bare numbers parse to seconds."""
    assert parse_duration_s(text) == pytest.approx(seconds)
    assert isinstance(parse_duration_s(text), float)


@pytest.mark.parametrize(
    "bad",
    ["", "  ", "h", "1x", "1h30", "30 m s", "-1s", "1e3s", "one hour", "1h-30m", ".5s", "1,5h"],
)
def test_parse_errors_name_the_valid_form(bad: str) -> None:
    """A string that is not a duration raises DurationError whose message shows the valid form."""
    with pytest.raises(DurationError) as info:
        parse_duration_s(bad)
    assert VALID_FORM in str(info.value)
    assert "'90s'" in str(info.value)
    assert "'1h30m'" in str(info.value)


@pytest.mark.parametrize("bad", [True, False, None, [1], {"s": 1}])
def test_parse_rejects_non_durations_of_other_types(bad: object) -> None:
    """Booleans, None, lists and maps are refused with the valid form in the message."""
    with pytest.raises(DurationError, match=r"e\.g\. '90s'"):
        parse_duration_s(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1, -0.5, math.inf, -math.inf, math.nan, "9" * 400 + "s"])
def test_parse_rejects_negative_and_non_finite(bad: object) -> None:
    """Negative numbers, YAML's .inf/.nan and overflowing strings are not durations."""
    with pytest.raises(DurationError):
        parse_duration_s(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "too_long", ["365d1s", "53w", "1000000000d", 10**400, 1e300, 31536001, "9" * 400 + "s"]
)
def test_parse_refuses_durations_over_the_bound_naming_it(too_long: object) -> None:
    """Anything longer than MAX_DURATION_S (365 days), a 400-digit YAML integer included, is a
    DurationError (a ValueError Pydantic reports) that names the bound, never OverflowError."""
    with pytest.raises(DurationError, match="longer than 365d") as info:
        parse_duration_s(too_long)  # type: ignore[arg-type]
    assert len(str(info.value)) < 200


@pytest.mark.parametrize("at_bound", ["365d", "52w1d", 31536000, 31536000.0])
def test_parse_accepts_the_bound_itself(at_bound: object) -> None:
    """Exactly 365 days is still a duration."""
    assert parse_duration_s(at_bound) == MAX_DURATION_S  # type: ignore[arg-type]


def test_duration_error_is_a_value_error() -> None:
    """DurationError is a ValueError, so Pydantic reports it as a field error, not a crash."""
    assert issubclass(DurationError, ValueError)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45, "45s"),
        (90, "1m30s"),
        (5400, "1h30m"),
        (3600, "1h"),
        (86400 + 1, "1d1s"),
        (604800, "7d"),
        (0.5, "0.5s"),
    ],
)
def test_format_shortest_form(seconds: float, text: str) -> None:
    """format_duration writes whole seconds as d/h/m/s parts and fractions as seconds."""
    assert format_duration(seconds) == text


@settings(deadline=None, max_examples=200)
@given(st.integers(min_value=0, max_value=int(MAX_DURATION_S)))
def test_whole_seconds_round_trip(seconds: int) -> None:
    """Whole seconds survive format then parse exactly."""
    assert parse_duration_s(format_duration(seconds)) == seconds


@settings(deadline=None, max_examples=200)
@given(st.floats(min_value=0, max_value=MAX_DURATION_S, allow_nan=False, allow_infinity=False))
def test_fractional_seconds_round_trip_exactly(seconds: float) -> None:
    """Any finite non-negative float survives format then parse exactly (no rounding, no
    exponent notation that the parser would refuse)."""
    text = format_duration(seconds)
    assert "e" not in text.lower().rstrip("s")
    assert parse_duration_s(text) == seconds


@settings(deadline=None, max_examples=100)
@given(st.lists(st.tuples(st.integers(0, 500), st.sampled_from(list(UNIT_S))), min_size=1))
def test_parse_sums_the_parts(parts: list[tuple[int, str]]) -> None:
    """A string of number+unit parts parses to the sum of each part in seconds, or is refused
    as too long when that sum is over the bound."""
    text = "".join(f"{n}{unit}" for n, unit in parts)
    expected = sum(n * UNIT_S[unit] for n, unit in parts)
    if expected > MAX_DURATION_S:
        with pytest.raises(DurationError, match="longer than"):
            parse_duration_s(text)
    else:
        assert parse_duration_s(text) == pytest.approx(expected)


def test_units_are_lower_case_as_the_schema_says() -> None:
    """Upper-case units are refused, as the JSON Schema's pattern refuses them, so an editor
    and the loader never disagree."""
    with pytest.raises(DurationError):
        parse_duration_s("1H30M")
