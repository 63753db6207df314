"""Daily tags: grammar, ordering, listing a CVMFS-like tree, choosing candidates."""

from __future__ import annotations

from pathlib import Path

from orchestrator.tasks.o2sync.tags import candidates, list_tags, parse_tag
from tests.o2sync.conftest import ARCH, PACKAGE, CvmfsTree


def test_parse_tag_accepts_the_daily_grammar_only() -> None:
    """`daily-YYYYMMDD-HHMM-N` with a real date parses; other names and impossible dates do not."""
    tag = parse_tag("daily-20250514-0328-1")
    assert tag is not None
    assert tag.when.isoformat() == "2025-05-14T03:28:00"
    assert tag.revision == 1
    for bad in (
        "daily-20250514-0328",
        "daily-2025051-0328-1",
        "nightly-20250514-0328-1",
        "daily-20250230-0328-1",
        "daily-20250514-2460-1",
        "daily-20250514-0328-1.bak",
        "v20250514-1",
        "",
    ):
        assert parse_tag(bad) is None, bad


def test_tags_sort_by_date_time_then_revision() -> None:
    """Ordering is by (date, time, revision), numerically: -10 is newer than -9."""
    names = [
        "daily-20250514-0328-10",
        "daily-20250513-2359-1",
        "daily-20250514-0328-9",
        "daily-20250514-0100-3",
    ]
    tags = sorted(t for t in map(parse_tag, names) if t)
    assert [t.text for t in tags] == [
        "daily-20250513-2359-1",
        "daily-20250514-0100-3",
        "daily-20250514-0328-9",
        "daily-20250514-0328-10",
    ]


def test_candidates_are_newer_than_current_and_not_rejected() -> None:
    """Candidates: newest first, strictly newer than the current tag, rejected ones left out."""
    tags = sorted(
        t
        for t in map(
            parse_tag,
            ["daily-20250512-0328-1", "daily-20250513-0328-1", "daily-20250514-0328-1"],
        )
        if t
    )
    assert [t.text for t in candidates(tags, None, set())] == [
        "daily-20250514-0328-1",
        "daily-20250513-0328-1",
        "daily-20250512-0328-1",
    ]
    assert [t.text for t in candidates(tags, "daily-20250512-0328-1", set())] == [
        "daily-20250514-0328-1",
        "daily-20250513-0328-1",
    ]
    assert [
        t.text for t in candidates(tags, "daily-20250512-0328-1", {"daily-20250514-0328-1"})
    ] == ["daily-20250513-0328-1"]
    assert candidates(tags, "daily-20250514-0328-1", set()) == []
    # A current tag newer than all published ones (e.g. one withdrawn) never means a step back.
    assert candidates(tags, "daily-20250601-0000-1", set()) == []


def test_list_tags_separates_tags_without_payload(cvmfs_tree: CvmfsTree, tmp_path: Path) -> None:
    """Listing reads modulefiles; a tag without its payload directory is incomplete (partial
    publication), names outside the grammar are ignored. The tree is the CVMFS stand-in."""
    cvmfs_tree.publish("daily-20250513-0328-1")
    cvmfs_tree.publish("daily-20250514-0328-1", payload=False)
    cvmfs_tree.publish("daily-20250512-0328-2")
    (cvmfs_tree.root / ARCH / "Modules" / "modulefiles" / PACKAGE / ".cvmfscatalog").touch()
    (cvmfs_tree.root / ARCH / "Modules" / "modulefiles" / PACKAGE / "v1.2.3").touch()
    listing = list_tags(cvmfs_tree.root, ARCH, PACKAGE)
    assert [t.text for t in listing.complete] == ["daily-20250512-0328-2", "daily-20250513-0328-1"]
    assert listing.incomplete == ["daily-20250514-0328-1"]
