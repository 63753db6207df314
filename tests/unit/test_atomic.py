"""orchestrator.atomic: the one way files are replaced (old or whole new, exact mode)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from orchestrator import atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that fills at the fsync leaves the target as it was and nothing beside it."""
    target = tmp_path / "outcome.json"
    atomic.write_json(target, {"state": "old"})

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        atomic.write_json(target, {"state": "new"})
    assert json.loads(target.read_text()) == {"state": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outcome.json"]


def test_the_mode_is_exact_whatever_the_umask(tmp_path: Path) -> None:
    """0600 under umask 0277 (which a plain open would leave 0400) and 0644 under 077."""
    old = os.umask(0o277)
    try:
        atomic.write_bytes(tmp_path / "a", b"x", 0o600)
        os.umask(0o077)
        atomic.write_text(tmp_path / "b", "y", 0o644, durable=True)
    finally:
        os.umask(old)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b").read_text() == "y"


def test_a_symlink_is_repointed_in_one_step(tmp_path: Path) -> None:
    """An existing link is replaced (never absent in between: a rename, not unlink + link),
    and a stale temporary name left by a crash does not stop the next update."""
    link = tmp_path / "current"
    atomic.replace_symlink(link, "tag-1")
    (tmp_path / f".current.{os.getpid()}.0.tmp").symlink_to("stale")
    atomic.replace_symlink(link, "tag-2")
    assert os.readlink(link) == "tag-2"
