"""Victims found in ``/proc`` by their command lines, not through the daemon's bookkeeping
(so a shim still starting can be hit too), and a SIGKILL that spares a reused pid."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from orchestrator.procinfo import is_same_process, process_start_time


@dataclass(frozen=True)
class Victim:
    pid: int
    start_time: int | None
    what: str


def _processes() -> list[tuple[int, list[str]]]:
    """(pid, argv) of every process whose command line can be read (zombies have none)."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path("/proc", entry.name, "cmdline").read_bytes()
        except OSError:
            continue  # gone, or not ours to read
        if raw:
            out.append((int(entry.name), raw.rstrip(b"\0").decode(errors="replace").split("\0")))
    return out


def live_shims(runs_dir: Path) -> list[Victim]:
    """Run shims whose run directory lies under ``runs_dir``."""
    out = []
    for pid, argv in _processes():
        if "orchestrator.executors.shim" not in argv or "--run-dir" not in argv:
            continue
        run_dir = argv[argv.index("--run-dir") + 1] if argv[-1] != "--run-dir" else ""
        if Path(run_dir).parent == runs_dir:
            out.append(Victim(pid, process_start_time(pid), f"shim {Path(run_dir).name}"))
    return sorted(out, key=lambda v: v.pid)


def live_children(script: Path) -> list[Victim]:
    """Job children running ``script`` (each leads its own process group)."""
    out = []
    for pid, argv in _processes():
        # argv: python -I -S SCRIPT EFFECTS JOB ...; a shim's argv holds SCRIPT too, later.
        if len(argv) > 5 and argv[3] == str(script):
            out.append(Victim(pid, process_start_time(pid), f"child of {argv[5]}"))
    return sorted(out, key=lambda v: v.pid)


def kill_victim(victim: Victim, group: bool) -> bool:
    """SIGKILL the victim (its process group when ``group``) if it is still the same process."""
    if not is_same_process(victim.pid, victim.start_time):
        return False
    try:
        if group:
            if os.getpgid(victim.pid) != victim.pid:
                return False  # not a group leader: not the job's child as the shim starts it
            os.killpg(victim.pid, signal.SIGKILL)
        else:
            os.kill(victim.pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True
