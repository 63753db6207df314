"""Atomic file replacement: a reader sees the old file or the whole new one, never a part.

One way for every file the daemon, the run shim and the tasks replace (run outcomes, the
lease, task results, token copies, O2 pointers and state): a temporary file made with a unique
name in the target's directory (the rename must not cross file systems, and two writers must
not share a temporary name), its mode set exactly with ``fchmod`` (a umask only removes bits),
the bytes written and ``fsync``-ed, then ``os.replace``; with ``durable`` the directory is
``fsync``-ed too, so that the rename itself survives a crash of the machine. On any failure the
temporary file is removed and the target is left as it was. Standard library only: the shim
and the task processes import it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_bytes(path: Path, data: bytes, mode: int = 0o600, durable: bool = False) -> None:
    """Replace ``path`` with ``data`` (file mode ``mode``) atomically."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        sync_directory(path.parent)


def write_text(path: Path, text: str, mode: int = 0o600, durable: bool = False) -> None:
    """:func:`write_bytes` of ``text`` in UTF-8."""
    write_bytes(path, text.encode("utf-8"), mode, durable)


def write_json(
    path: Path,
    data: Any,
    mode: int = 0o600,
    durable: bool = False,
    indent: int | None = None,
    sort_keys: bool = False,
) -> None:
    """:func:`write_bytes` of ``data`` as JSON and a final newline (``default=str``: dates)."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, default=str) + "\n"
    write_bytes(path, text.encode("utf-8"), mode, durable)


def replace_symlink(link: Path, target: str | Path) -> None:
    """Point ``link`` at ``target`` atomically (a new link renamed over the old one)."""
    for attempt in range(100):
        tmp = link.parent / f".{link.name}.{os.getpid()}.{attempt}.tmp"
        try:
            os.symlink(target, tmp)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"no free temporary name beside {link}")
    try:
        os.replace(tmp, link)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def sync_directory(directory: Path) -> None:
    """``fsync`` a directory (its entries: a rename); silently skipped where it cannot be
    opened (some network file systems)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
