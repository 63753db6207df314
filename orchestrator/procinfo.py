"""What /proc says about a process: its start time, and whether a pid is still the same process.

A pid alone does not name a process: the kernel reuses pids. The start time (field 22 of
/proc/PID/stat, in clock ticks since boot) together with the pid does, so a run record keeps both
and every liveness check compares both. Stdlib only: the run shim imports this module.
"""

from __future__ import annotations

__all__ = ["is_same_process", "process_start_time", "process_state"]


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
    if pid <= 0:
        return None
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    try:
        return int(fields[22 - 3])
    except ValueError:
        return None


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
