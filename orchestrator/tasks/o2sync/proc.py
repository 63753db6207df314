"""Subprocesses of an O2Sync run: argv lists, explicit timeouts, return codes checked.

Each child starts in its own session so that a timeout stops its whole process group (aliBuild
forks bash, make and the compilers). When the daemon stops the run (its timeout, a cancel) it
sends SIGTERM to the task's group, which does not reach a child in its own session; the task
therefore turns SIGTERM into ``Terminated`` (``install_signal_handlers``), and ``run`` stops the
child's group on its way out.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from orchestrator.tasks.o2sync.errors import O2SyncError

# Below the daemon's default kill_grace (10 s), so that the build is gone before the task is.
KILL_GRACE_S = 5.0


class Terminated(O2SyncError):
    """The task was asked to stop (SIGTERM/SIGINT) while it ran."""

    def __init__(self, signum: int) -> None:
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} (the run's timeout or a cancel); a command in progress was "
            "stopped, nothing was promoted or recorded as built",
            "terminated",
        )
        self.signum = signum


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    del frame
    # Once: a second signal must not interrupt the clean-up that the first one started.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Terminated(signum)


def install_signal_handlers() -> None:
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGINT, _raise_terminated)


@dataclass
class Completed:
    """How a command ended. ``tail`` holds its last lines (stdout and stderr together);
    ``seen`` the ``watch`` strings that appeared in any line."""

    argv: list[str]
    returncode: int
    tail: list[str]
    timed_out: bool = False
    seen: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def output(self) -> str:
        return "\n".join(self.tail)

    def describe(self, limit_lines: int = 15) -> str:
        """One line saying how it ended, then its last lines, for error messages."""
        how = "timed out" if self.timed_out else f"exited with {self.returncode}"
        lines = [line for line in self.tail if line.strip()][-limit_lines:]
        body = "\n".join("    " + line for line in lines)
        return f"`{' '.join(self.argv)}` {how}" + (f":\n{body}" if body else "")


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """TERM to the child's process group, a grace period, then KILL."""
    for sig, wait_s in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def run(
    argv: list[str],
    *,
    timeout_s: float,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    echo: bool = False,
    log: IO[str] | None = None,
    watch: Iterable[str] = (),
    tail_lines: int = 400,
    on_start: Callable[[int], None] | None = None,
) -> Completed:
    """Run ``argv`` to its end or ``timeout_s``; never raises for a non-zero exit.

    ``echo`` copies each output line to our stdout (the run's log), ``log`` to a file;
    ``on_start`` is called with the child's pid (also its process group id). Raises
    ``O2SyncError`` when the program cannot be started at all.
    """
    watch = tuple(watch)
    try:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise O2SyncError(
            f"cannot start `{argv[0]}`: {exc.strerror or exc}; check that it is installed "
            "and on PATH (or give its full path in the manifest)",
            "not_found",
        ) from exc
    tail: deque[str] = deque(maxlen=tail_lines)
    seen: set[str] = set()
    assert proc.stdout is not None
    reader = threading.Thread(
        target=_pump, args=(proc.stdout, tail, watch, seen, echo, log), daemon=True
    )
    reader.start()
    timed_out = False
    try:
        if on_start is not None:
            on_start(proc.pid)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _stop_group(proc)
    finally:
        if proc.poll() is None:  # Terminated (or another exception) while waiting
            _stop_group(proc)
        reader.join(5.0)
        if reader.is_alive():
            # A grandchild kept the pipe open after the child ended: stop the rest of the group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            reader.join(5.0)
        if log is not None:
            log.flush()
    return Completed(list(argv), proc.returncode, list(tail), timed_out, seen)


def _pump(
    stream: IO[bytes],
    tail: deque[str],
    watch: tuple[str, ...],
    seen: set[str],
    echo: bool,
    log: IO[str] | None,
) -> None:
    """Read the child's output line by line: keep the tail, note the watched strings, copy
    each line to our stdout (``echo``) and to ``log``."""
    for raw in stream:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        tail.append(line)
        seen.update(needle for needle in watch if needle in line)
        if echo:
            sys.stdout.write(f"  | {line}\n")
            sys.stdout.flush()
        if log is not None:
            log.write(line + "\n")
