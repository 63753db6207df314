"""Daily tags (``daily-YYYYMMDD-HHMM-N``): parsing, ordering, listing and choosing.

Pure functions except ``list_tags``, which reads a CVMFS-like directory tree::

    <root>/<arch>/Modules/modulefiles/<package>/<tag>   (a modulefile: the tag is announced)
    <root>/<arch>/Packages/<package>/<tag>/             (the payload)

Publication can be partial, so a tag with a modulefile and no payload is listed as
incomplete, never as a candidate.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

_TAG = re.compile(r"^daily-(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})-(\d+)$")


@dataclass(frozen=True, order=True)
class DailyTag:
    """A parsed daily tag; instances sort by (date, time, revision)."""

    when: datetime
    revision: int
    text: str

    def __str__(self) -> str:
        return self.text


def parse_tag(text: str) -> DailyTag | None:
    """The tag, or None for a name that is not ``daily-YYYYMMDD-HHMM-N`` with a real date."""
    match = _TAG.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, rev = (int(g) for g in match.groups())
    try:
        when = datetime(year, month, day, hour, minute)
    except ValueError:
        return None
    return DailyTag(when, rev, text)


def tag_key(text: str) -> tuple[datetime, int] | None:
    tag = parse_tag(text)
    return None if tag is None else (tag.when, tag.revision)


@dataclass(frozen=True)
class Listing:
    """What a CVMFS tree offers: tags with payload (sorted, oldest first) and announced tags
    whose payload is missing."""

    complete: list[DailyTag]
    incomplete: list[str]


def modulefile_dir(root: Path, arch: str, package: str) -> Path:
    return root / arch / "Modules" / "modulefiles" / package


def payload_dir(root: Path, arch: str, package: str, tag: str) -> Path:
    return root / arch / "Packages" / package / tag


def list_tags(root: Path, arch: str, package: str) -> Listing:
    """Tags announced under the modulefile directory. Raises OSError when that directory
    cannot be read (CVMFS not mounted, wrong arch or package)."""
    names = os.listdir(modulefile_dir(root, arch, package))
    complete: list[DailyTag] = []
    incomplete: list[str] = []
    for name in names:
        tag = parse_tag(name)
        if tag is None:
            continue
        if payload_dir(root, arch, package, name).is_dir():
            complete.append(tag)
        else:
            incomplete.append(name)
    return Listing(sorted(complete), sorted(incomplete, key=lambda n: tag_key(n) or ()))


def candidates(
    available: list[DailyTag], current: str | None, rejected: set[str] | frozenset[str]
) -> list[DailyTag]:
    """Tags worth probing, newest first: newer than ``current`` (never a step back) and not
    rejected before. Empty when ``current`` is already the newest usable tag."""
    floor = tag_key(current) if current else None
    out = [
        t
        for t in available
        if t.text not in rejected and (floor is None or (t.when, t.revision) > floor)
    ]
    return sorted(out, reverse=True)
