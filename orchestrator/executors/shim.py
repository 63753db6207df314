"""The process that owns one run: ``python -m orchestrator.executors.shim``.

Usage::

    python -m orchestrator.executors.shim --run-dir DIR --log LOG --timeout-s T --grace-s G \\
        [--workdir W] -- ARGV...

The job's environment is the shim's own environment (the executor execs the shim with it).

What the shim does, in order:

1. writes ``DIR/shim.json`` ``{"pid", "start_time"}`` (atomically);
2. starts ARGV in its own process group (``process_group=0``), stdin ``/dev/null``, stdout and
   stderr appended to LOG, working directory W (or DIR when W is not given). The daemon holds no
   pipe to the run, so the run survives the daemon's death;
3. waits for the child, enforcing the timeout: SIGTERM to the group, ``--grace-s`` later SIGKILL;
4. on SIGTERM or SIGINT to the shim itself (how the daemon cancels) does the same and records
   ``cancelled``;
5. after the child has exited, SIGKILLs whatever is left in its process group (background
   stragglers);
6. writes ``DIR/result.json`` atomically (tmp file, fsync, rename, fsync of DIR)::

       {"state": "succeeded"|"failed"|"timed_out"|"cancelled",
        "exit_code": int|null, "signal": int|null, "started_at": iso, "finished_at": iso,
        "child_pid": int|null, "message": str|null}

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
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from orchestrator.procinfo import process_start_time

SHIM_FILE = "shim.json"
RESULT_FILE = "result.json"
CHILD_FILE = "child.json"
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126
_POLL_S = 0.02  # how often the wait loop looks at the child, the clock and the cancel flag


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(data, out)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)  # the rename itself must survive a crash of the machine
    finally:
        os.close(dir_fd)


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

    # -------------------------------------------------------------- helpers

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.cancel_signal is None:
            self.cancel_signal = signum

    def _note(self, text: str) -> None:
        """A line from the shim in the job's log, so that the log tells the whole story."""
        if self.log_fd >= 0:
            # OSError (a full disk) must not stop the result from being written.
            with contextlib.suppress(OSError):
                os.write(self.log_fd, f"[orchestrator-shim {_now_iso()}] {text}\n".encode())

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
            "finished_at": _now_iso(),
            "child_pid": child_pid,
            "message": message,
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
        while True:
            code = child.poll()
            if code is not None:
                return code
            if self.cancel_signal is not None:
                return None
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(_POLL_S)

    def _stop_group(self, child: subprocess.Popen[bytes]) -> int:
        """TERM the child's group, KILL it after the grace period; return the exit code."""
        self._killpg(child.pid, signal.SIGTERM)
        code = self._wait_plain(child, time.monotonic() + self.grace_s)
        if code is None:
            self._note(f"process group {child.pid} still alive after {self.grace_s:g}s: SIGKILL")
            self._killpg(child.pid, signal.SIGKILL)
            code = child.wait()
        return code

    def _wait_plain(self, child: subprocess.Popen[bytes], deadline: float) -> int | None:
        while time.monotonic() < deadline:
            code = child.poll()
            if code is not None:
                return code
            time.sleep(_POLL_S)
        return child.poll()

    # -------------------------------------------------------------- the run

    def run(self) -> dict[str, Any]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            self.run_dir / SHIM_FILE,
            {"pid": os.getpid(), "start_time": process_start_time(os.getpid())},
        )
        self.log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        started_at = _now_iso()
        if not self.argv:
            message = "no command given"
            self._note(message)
            return self._result("failed", EXIT_NOT_FOUND, message, started_at, None)
        if not os.path.isdir(self.workdir):
            message = f"working directory {self.workdir!r} does not exist"
            self._note(message)
            return self._result("failed", EXIT_NOT_FOUND, message, started_at, None)
        try:
            child = subprocess.Popen(
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
        # (SIGKILLed) can stop the orphaned job instead of letting a retry run beside it.
        write_json_atomic(
            self.run_dir / CHILD_FILE,
            {"pgid": child.pid, "start_time": process_start_time(child.pid)},
        )
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
            code = self._stop_group(child)
            state, message_or_none = "cancelled", f"cancelled ({sig_name})"
        else:
            self._note(f"timed out after {self.timeout_s:g}s: SIGTERM to process group {child.pid}")
            code = self._stop_group(child)
            state, message_or_none = "timed_out", f"timed out after {self.timeout_s:g}s"
        # Background processes the job left in its group die with it: a run owns its group.
        self._killpg(child.pid, signal.SIGKILL)
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
        result = shim._result("failed", None, f"run shim error: {exc!r}", _now_iso(), None)
    write_json_atomic(Path(args.run_dir) / RESULT_FILE, result)
    if shim.log_fd >= 0:
        os.close(shim.log_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
