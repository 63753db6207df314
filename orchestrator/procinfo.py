"""What /proc says about processes: start time, liveness, and where a process belongs.

A pid alone does not name a process: the kernel reuses pids. The start time (field 22 of
/proc/PID/stat, in clock ticks since boot) together with the pid does, so a run record keeps both
and every liveness check compares both. ``descendants`` and ``session_members`` find a run's
processes (its tree below the shim, its session) so that none outlives the run (issue 8).
Stdlib only: the run shim imports this module.
"""

from __future__ import annotations

import os
from typing import NamedTuple

__all__ = [
    "ProcStat",
    "descendants",
    "is_same_process",
    "process_start_time",
    "process_state",
    "read_stat",
    "session_members",
]


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after ``comm``, or None when the process is gone.

    ``comm`` (field 2) is in parentheses and may itself contain spaces and parentheses, so the
    fields that follow are found after the LAST ``)`` (proc(5)).
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            raw = stat_file.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except PermissionError:
        # /proc mounted with hidepid: we cannot tell; treat as gone rather than guess alive.
        return None
    end_of_comm = raw.rfind(b")")
    if end_of_comm < 0:
        return None
    # After comm: field 3 (state) is index 0, so field N is index N - 3.
    return raw[end_of_comm + 1 :].decode("ascii", "replace").split()


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (stat field 22), or None when it is gone."""
    found = read_stat(pid)
    return found.start_time if found is not None else None


def process_state(pid: int) -> str | None:
    """One-letter process state (stat field 3: R, S, D, Z, ...), or None when it is gone."""
    if pid <= 0:
        return None
    fields = _stat_fields(pid)
    if not fields:
        return None
    return fields[0]


def is_same_process(pid: int | None, start_time: int | None) -> bool:
    """Whether ``pid`` is alive and is the process that had ``start_time``.

    A zombie counts as gone: it has exited and only waits to be reaped. With ``start_time``
    None only liveness is checked (a record written before the start time was known).
    """
    if pid is None or pid <= 0:
        return False
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return False
    if fields[0] in ("Z", "X", "x"):
        return False
    if start_time is None:
        return True
    try:
        return int(fields[22 - 3]) == start_time
    except ValueError:
        return False


class ProcStat(NamedTuple):
    """The fields of /proc/PID/stat that tell who a process is and where it belongs."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str  # one letter: R, S, D, Z, ...
    start_time: int  # clock ticks since boot

    @property
    def exited(self) -> bool:
        """A zombie (or dead) process: it has ended and only waits to be reaped."""
        return self.state in ("Z", "X", "x")


def read_stat(pid: int) -> ProcStat | None:
    """``pid``'s parent, process group, session, state and start time; None when it is gone."""
    if pid <= 0:
        return None
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    try:
        # Fields 4 (ppid), 5 (pgrp), 6 (session) and 22 (starttime) of proc(5).
        return ProcStat(
            pid, int(fields[1]), int(fields[2]), int(fields[3]), fields[0], int(fields[19])
        )
    except ValueError:
        return None


def _all_pids() -> list[int]:
    try:
        names = os.listdir("/proc")
    except OSError:
        return []  # no /proc (not Linux): nothing can be found
    return [int(name) for name in names if name.isdigit()]


def _children(pid: int) -> list[int]:
    """Children of ``pid`` from /proc/PID/task/*/children (each thread lists the children it
    forked); empty when the process or a thread ended meanwhile."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as children_file:
                found.extend(int(word) for word in children_file.read().split())
        except OSError:
            continue  # the thread ended between listdir and open
    return found


def descendants(root_pid: int) -> list[ProcStat]:
    """Every process below ``root_pid`` (children, their children, ...), zombies included.

    Walks the children files when the kernel has them (CONFIG_PROC_CHILDREN: the cost grows
    with the tree, not with the machine's process count), else scans all of /proc once. A
    process forked while the walk runs may be missed: callers that must leave nothing alive
    repeat until the walk comes back empty.
    """
    if not os.path.exists(f"/proc/{root_pid}/task/{root_pid}/children"):
        return _descendants_by_scan(root_pid)
    found: list[ProcStat] = []
    seen = {root_pid}
    queue = [root_pid]
    while queue:
        for pid in _children(queue.pop()):
            if pid in seen:
                continue
            seen.add(pid)
            stat = read_stat(pid)
            if stat is not None:
                found.append(stat)
                queue.append(pid)
    return found


def _descendants_by_scan(root_pid: int) -> list[ProcStat]:
    by_parent: dict[int, list[ProcStat]] = {}
    for pid in _all_pids():
        stat = read_stat(pid)
        if stat is not None:
            by_parent.setdefault(stat.ppid, []).append(stat)
    found: list[ProcStat] = []
    queue = [root_pid]
    while queue:
        for stat in by_parent.get(queue.pop(), []):
            found.append(stat)
            queue.append(stat.pid)
    return found


def session_members(sid: int) -> list[ProcStat]:
    """Every process whose session id is ``sid`` (a scan of all of /proc)."""
    members = []
    for pid in _all_pids():
        stat = read_stat(pid)
        if stat is not None and stat.sid == sid:
            members.append(stat)
    return members
