"""The process that owns one run: ``python -m orchestrator.executors.shim``.

Usage::

    python -m orchestrator.executors.shim --run-dir DIR --log LOG --timeout-s T --grace-s G \\
        [--workdir W] -- ARGV...

The job's environment is the shim's own environment (the executor execs the shim with it).

What the shim does, in order:

1. makes itself the *child subreaper* of its descendants (Linux ``PR_SET_CHILD_SUBREAPER``): a
   job process whose parent exits re-parents to the shim instead of init, so that processes a
   job detaches (``setsid``, double fork) stay findable; elsewhere it notes in LOG that they may
   outlive the run;
2. writes ``DIR/shim.json`` ``{"pid", "start_time", "sid"}`` (atomically). The executor starts
   the shim as a session leader, and every job process starts in that session, so this file,
   written before any job process exists, names them all: a daemon that finds the shim dead
   without a result kills the session (``LocalExecutor._kill_orphaned_job``), whenever the shim
   died, even between starting the child and writing ``child.json``;
3. starts ARGV in its own process group (``process_group=0``), stdin ``/dev/null``, stdout and
   stderr appended to LOG, working directory W (or DIR when W is not given), and writes
   ``DIR/child.json`` ``{"pgid", "start_time", "escaped"}``. The daemon holds no pipe to the run,
   so the run survives the daemon's death;
4. waits for the child, enforcing the timeout: SIGTERM to the group and to every descendant
   outside it, ``--grace-s`` later SIGKILL. While it waits it walks the job's process tree (every
   0.1 s at first, then every second), reaps the orphans it adopted, and adds each process that
   left the session (``setsid``) to ``escaped`` in ``child.json`` ``[{"pid", "start_time"}]``:
   a daemon finding the shim SIGKILLed cannot find those through the session;
5. on SIGTERM or SIGINT to the shim itself (how the daemon cancels) does the same and records
   ``cancelled``;
6. after the child has exited, SIGKILLs whatever is left in its process group (background
   stragglers) and then every process still below the shim, detached or not, and reaps them:
   a run leaves no process behind;
7. writes ``DIR/result.json`` atomically (tmp file, fsync, rename, fsync of DIR)::

       {"state": "succeeded"|"failed"|"timed_out"|"cancelled",
        "exit_code": int|null, "signal": int|null, "started_at": iso, "finished_at": iso,
        "child_pid": int|null, "message": str|null}

What still escapes: a process that leaves the session and whose shim is SIGKILLed before the
shim's next walk of the tree (up to a second), or that is started after the shim's death by a
detached process; nothing records those.

The files the shim writes are mode 0600 whatever the umask (issue 8, point 7); the job's own
files follow the umask the shim inherited, which it never changes.

``exit_code`` follows Python's ``returncode`` convention: the exit status when the child exited,
``-N`` when signal N killed it (``signal`` is then N). A command that cannot be started gives
``failed`` with exit code 127 (not found, or the workdir is missing) or 126 (found but not
executable), as a shell would, and the message is also written to the log.

This module imports only the standard library (and the stdlib-only ``orchestrator.procinfo``) so
that it starts in a few tens of milliseconds; never import pydantic, numba or the store here.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from orchestrator.executors.shim_os import (
    FILE_MODE,
    become_subreaper,
    now_iso,
    tree_usage,
    write_json_atomic,
)
from orchestrator.procinfo import ProcStat, descendants, process_start_time

SHIM_FILE = "shim.json"
OUTCOME_FILE = "result.json"
CHILD_FILE = "child.json"
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126
_POLL_S = 0.02  # how often the wait loop looks at the child, the clock and the cancel flag
# How often the wait loop walks the job's process tree: soon after the start (a job that
# detaches a daemon does so early), then every second, which costs a few /proc reads.
_SCAN_FIRST_S = 0.1
_SCAN_MAX_S = 1.0
_SWEEP_LIMIT_S = 5.0  # how long the final sweep keeps killing a tree that keeps forking
_DIR_MODE = 0o700


class _Shim:
    def __init__(self, args: argparse.Namespace) -> None:
        self.run_dir = Path(args.run_dir)
        self.log_path = Path(args.log)
        self.timeout_s: float = args.timeout_s
        self.grace_s: float = args.grace_s
        self.workdir: str = args.workdir or str(self.run_dir)
        self.argv: list[str] = args.argv
        self.cancel_signal: int | None = None
        self.log_fd = -1
        self.sid = os.getsid(0)
        self.child: subprocess.Popen[bytes] | None = None
        self.child_record: dict[str, Any] = {}
        self.escaped: dict[int, int] = {}  # pid -> start time of processes that left the session
        self.started_mono = time.monotonic()

    # -------------------------------------------------------------- helpers

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.cancel_signal is None:
            self.cancel_signal = signum

    def _note(self, text: str) -> None:
        """A line from the shim in the job's log, so that the log tells the whole story."""
        if self.log_fd >= 0:
            # OSError (a full disk) must not stop the result from being written.
            with contextlib.suppress(OSError):
                os.write(self.log_fd, f"[orchestrator-shim {now_iso()}] {text}\n".encode())

    def _result(
        self,
        state: str,
        exit_code: int | None,
        message: str | None,
        started_at: str,
        child_pid: int | None,
    ) -> dict[str, Any]:
        sig = -exit_code if exit_code is not None and exit_code < 0 else None
        return {
            "state": state,
            "exit_code": exit_code,
            "signal": sig,
            "started_at": started_at,
            "finished_at": now_iso(),
            "child_pid": child_pid,
            "message": message,
            "usage": tree_usage(self.started_mono) if child_pid is not None else None,
        }

    @staticmethod
    def _killpg(pgid: int, sig: int) -> bool:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def _wait(self, child: subprocess.Popen[bytes], deadline: float | None) -> int | None:
        """Wait for ``child`` until ``deadline`` (monotonic) or a cancel signal; None if neither."""
        scan_every_s = _SCAN_FIRST_S
        next_scan = time.monotonic() + scan_every_s
        while True:
            code = child.poll()
            if code is not None:
                return code
            if self.cancel_signal is not None:
                return None
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            if now >= next_scan:
                self._watch_tree(child.pid)
                scan_every_s = min(2 * scan_every_s, _SCAN_MAX_S)
                next_scan = now + scan_every_s
            time.sleep(_POLL_S)

    def _job_tree(self) -> list[ProcStat]:
        """The live processes below the shim: the job and all it started, detached or not."""
        return [proc for proc in descendants(os.getpid()) if not proc.exited]

    def _watch_tree(self, child_pid: int) -> None:
        """Reap the orphans the shim adopted, and record in child.json the processes that
        left the session, which a daemon finding this shim SIGKILLed could not find."""
        me = os.getpid()
        new = False
        for proc in descendants(me):
            if proc.exited:
                # Never the job's own child: Popen must collect its exit status.
                if proc.ppid == me and proc.pid != child_pid:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(proc.pid, os.WNOHANG)
            elif proc.sid != self.sid and proc.pid not in self.escaped:
                self.escaped[proc.pid] = proc.start_time
                new = True
        if new:
            self.child_record["escaped"] = [
                {"pid": pid, "start_time": start} for pid, start in self.escaped.items()
            ]
            try:
                write_json_atomic(self.run_dir / CHILD_FILE, self.child_record)
            except OSError as exc:
                # A full disk must not end the run: the shim still kills them at the end.
                self._note(f"cannot record detached processes in {CHILD_FILE}: {exc}")

    def _signal_outside_group(self, pgid: int, sig: int) -> None:
        """Send ``sig`` to every live process below the shim that is not in group ``pgid``."""
        signalled = []
        for proc in self._job_tree():
            if proc.pgid != pgid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(proc.pid, sig)
                    signalled.append(proc.pid)
        if signalled:
            pids = " ".join(str(pid) for pid in signalled)
            name = signal.Signals(sig).name
            self._note(f"{name} to processes the job left outside its process group: {pids}")

    def _stop_tree(self, child: subprocess.Popen[bytes]) -> int:
        """TERM the child's group and every process the job moved out of it; KILL the group
        after the grace period; return the child's exit code. The sweep that follows KILLs
        whatever is left."""
        deadline = time.monotonic() + self.grace_s
        self._killpg(child.pid, signal.SIGTERM)
        self._signal_outside_group(child.pid, signal.SIGTERM)
        code = self._wait_plain(child, deadline)
        if code is None:
            self._note(f"process group {child.pid} still alive after {self.grace_s:g}s: SIGKILL")
            self._killpg(child.pid, signal.SIGKILL)
            return child.wait()
        # The child ended within the grace period: what it detached gets the rest of it.
        while self._job_tree() and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        return code

    def _reap_all(self) -> None:
        """Collect every exited child; only once the job's own child has been collected."""
        while True:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    def _sweep(self, child_pid: int) -> None:
        """SIGKILL every process left below the shim (they re-parent to it as their parents
        die) and reap them, until none is left or ``_SWEEP_LIMIT_S`` has passed."""
        detached: set[int] = set()
        give_up_at = time.monotonic() + _SWEEP_LIMIT_S
        while True:
            self._reap_all()
            left = self._job_tree()
            if not left:
                break
            if time.monotonic() > give_up_at:
                pids = " ".join(str(proc.pid) for proc in left)
                self._note(f"processes still alive after {_SWEEP_LIMIT_S:g}s of SIGKILL: {pids}")
                break
            for proc in left:
                if proc.pgid != child_pid:
                    detached.add(proc.pid)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(proc.pid, signal.SIGKILL)
            time.sleep(_POLL_S / 4)
        if detached:
            pids = " ".join(str(pid) for pid in sorted(detached))
            self._note(f"SIGKILL to processes the job left outside its process group: {pids}")

    def abort(self) -> None:
        """Kill the job and everything below the shim (the shim failed with the job running)."""
        if self.child is None:
            return
        if self.child.poll() is None:
            self._killpg(self.child.pid, signal.SIGKILL)
            self.child.wait()
        self._sweep(self.child.pid)

    def _wait_plain(self, child: subprocess.Popen[bytes], deadline: float) -> int | None:
        while time.monotonic() < deadline:
            code = child.poll()
            if code is not None:
                return code
            time.sleep(_POLL_S)
        return child.poll()

    # -------------------------------------------------------------- the run

    def run(self) -> dict[str, Any]:
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)
        no_subreaper = become_subreaper()
        # Before any job process exists: the session named here holds every one of them.
        write_json_atomic(
            self.run_dir / SHIM_FILE,
            {"pid": os.getpid(), "start_time": process_start_time(os.getpid()), "sid": self.sid},
        )
        # The executor creates the log 0600 exactly; a shim started by hand gets at most that.
        self.log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        started_at = now_iso()
        self.started_mono = time.monotonic()
        if no_subreaper:
            self._note(f"{no_subreaper}: processes the job detaches (setsid) may outlive the run")
        if not self.argv:
            message = "no command given"
            self._note(message)
            return self._result("failed", EXIT_NOT_FOUND, message, started_at, None)
        if not os.path.isdir(self.workdir):
            message = f"working directory {self.workdir!r} does not exist"
            self._note(message)
            return self._result("failed", EXIT_NOT_FOUND, message, started_at, None)
        try:
            self.child = child = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self.log_fd,
                stderr=self.log_fd,
                cwd=self.workdir,
                process_group=0,
                close_fds=True,
            )
        except FileNotFoundError:
            message = f"command not found: {self.argv[0]!r}"
            self._note(message)
            return self._result("failed", EXIT_NOT_FOUND, message, started_at, None)
        except PermissionError:
            message = f"command not executable (permission denied): {self.argv[0]!r}"
            self._note(message)
            return self._result("failed", EXIT_NOT_EXECUTABLE, message, started_at, None)
        except OSError as exc:
            # ENOEXEC (no #! line), E2BIG, ...: found but cannot be executed
            message = f"cannot execute {self.argv[0]!r}: {exc.strerror or exc}"
            self._note(message)
            return self._result("failed", EXIT_NOT_EXECUTABLE, message, started_at, None)

        # The job's process group, so that a daemon finding this shim gone without a result
        # (SIGKILLed) can stop the orphaned job instead of letting a retry run beside it (the
        # session in shim.json covers the moments before this file exists).
        self.child_record = {
            "pgid": child.pid,
            "start_time": process_start_time(child.pid),
            "escaped": [],
        }
        write_json_atomic(self.run_dir / CHILD_FILE, self.child_record)
        deadline = time.monotonic() + self.timeout_s if self.timeout_s > 0 else None
        code = self._wait(child, deadline)
        state: str
        message_or_none: str | None
        if code is not None:
            if code == 0:
                state, message_or_none = "succeeded", None
            elif code < 0:
                state = "failed"
                message_or_none = f"killed by signal {signal.Signals(-code).name}"
            else:
                state, message_or_none = "failed", f"exit code {code}"
        elif self.cancel_signal is not None:
            sig_name = signal.Signals(self.cancel_signal).name
            self._note(f"cancelled ({sig_name} to the shim): stopping process group {child.pid}")
            code = self._stop_tree(child)
            state, message_or_none = "cancelled", f"cancelled ({sig_name})"
        else:
            self._note(f"timed out after {self.timeout_s:g}s: SIGTERM to process group {child.pid}")
            code = self._stop_tree(child)
            state, message_or_none = "timed_out", f"timed out after {self.timeout_s:g}s"
        # Background processes the job left in its group die with it: a run owns its group,
        # and every process below the shim, wherever it moved.
        self._killpg(child.pid, signal.SIGKILL)
        self._sweep(child.pid)
        return self._result(state, code, message_or_none, started_at, child.pid)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.executors.shim",
        description="Run one job's argv, enforce its timeout, record its outcome.",
    )
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--timeout-s", type=float, required=True)
    parser.add_argument("--grace-s", type=float, required=True)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.argv and args.argv[0] == "--":
        args.argv = args.argv[1:]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    shim = _Shim(args)
    signal.signal(signal.SIGTERM, shim._on_signal)
    signal.signal(signal.SIGINT, shim._on_signal)
    try:
        result = shim.run()
    except Exception as exc:  # the run must end with a result file whatever went wrong
        shim._note(f"shim error: {exc!r}")
        try:
            shim.abort()  # a job whose shim gave up would run unwatched beside its retry
        except Exception as abort_exc:
            shim._note(f"shim error while killing the job: {abort_exc!r}")
        result = shim._result("failed", None, f"run shim error: {exc!r}", now_iso(), None)
    write_json_atomic(Path(args.run_dir) / OUTCOME_FILE, result)
    if shim.log_fd >= 0:
        os.close(shim.log_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
