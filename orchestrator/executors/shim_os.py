"""What the run shim asks of the operating system: durable atomic JSON files, and becoming the
reaper of its orphaned descendants. Standard library only: the shim starts with nothing else."""

from __future__ import annotations

import ctypes
import os
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator import atomic

FILE_MODE = 0o600  # the shim's files: the user's alone, whatever the umask
_PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>, Linux >= 3.4


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """The shim's records: atomic, mode 0600, and durable (the rename survives a crash of the
    machine, so that a daemon started after it finds the outcome)."""
    atomic.write_json(path, data, FILE_MODE, durable=True)


def become_subreaper() -> str | None:
    """Make this process the reaper of its orphaned descendants; returns why not, or None.

    Without it a process whose parent exits re-parents to init (or the nearest subreaper),
    out of reach of the shim's walk of its tree. The attribute is not inherited across fork,
    so the job's own processes are not subreapers.
    """
    if not sys.platform.startswith("linux"):
        return f"no child subreaper on {sys.platform}"
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        failed = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0
    except (OSError, AttributeError) as exc:  # no libc.so, or a libc without prctl
        return f"cannot call prctl: {exc}"
    if failed:
        return f"prctl(PR_SET_CHILD_SUBREAPER) failed: {os.strerror(ctypes.get_errno())}"
    return None


def tree_usage(started_mono: float) -> dict[str, float]:
    """What the job's process tree used: the shim is its subreaper and has waited for every
    process of it, so ``RUSAGE_CHILDREN`` holds the tree's CPU time and its largest process's
    peak RSS (the peak of one process, not of the tree's sum at one moment)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "wall_s": round(time.monotonic() - started_mono, 3),
        "cpu_s": round(used.ru_utime + used.ru_stime, 3),
        "max_rss_mb": round(used.ru_maxrss / 1024.0, 1),  # Linux: kilobytes
    }
