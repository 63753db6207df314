"""Host lists written as brace patterns: ``login{01..40}``, ``nid{1..3}-{a,b}``.

The same forms bash expands, without a shell: ``{N..M}`` counts (zero-padded to the width of
the wider bound when either bound is written with a leading zero, as bash does) and ``{a,b}``
alternates; several braces multiply out left to right.
"""

from __future__ import annotations

import re

MAX_HOSTS = 10_000
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")
HOST_PATTERN_RE = r"^[A-Za-z0-9._{},-]+$"


def _alternatives(body: str) -> list[str]:
    counted = _RANGE.match(body)
    if counted:
        first_s, last_s = counted.groups()
        first, last = int(first_s), int(last_s)
        padded = any(
            len(s.lstrip("-")) > 1 and s.lstrip("-").startswith("0") for s in counted.groups()
        )
        width = max(len(first_s), len(last_s)) if padded else 0
        step = 1 if last >= first else -1
        return [str(n).zfill(width) for n in range(first, last + step, step)]
    if "," in body:
        return body.split(",")
    raise ValueError(f"'{{{body}}}' is neither a range '{{01..40}}' nor a list '{{a,b}}'")


def expand_host_pattern(pattern: str) -> list[str]:
    """All host names a pattern stands for, in order. Raises ValueError for a malformed
    pattern or one that expands to more than MAX_HOSTS names."""
    names = [""]
    pos = 0
    for match in _BRACE.finditer(pattern):
        literal = pattern[pos : match.start()]
        if "{" in literal or "}" in literal:
            raise ValueError(f"unbalanced brace in host pattern {pattern!r}")
        options = _alternatives(match.group(1))
        if len(names) * len(options) > MAX_HOSTS:
            raise ValueError(f"host pattern {pattern!r} expands to more than {MAX_HOSTS} hosts")
        names = [n + literal + o for n in names for o in options]
        pos = match.end()
    tail = pattern[pos:]
    if "{" in tail or "}" in tail:
        raise ValueError(f"unbalanced brace in host pattern {pattern!r}")
    names = [n + tail for n in names]
    if any(not n or n.startswith("-") for n in names):
        raise ValueError(f"host pattern {pattern!r} gives an empty name or one starting with '-'")
    return names
