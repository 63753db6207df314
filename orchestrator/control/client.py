"""The client's end of the control socket: ``request``.

The client also retries a connect that finds the listen backlog full (EAGAIN), and for a
moment one that is refused (a daemon between bind and listen), within its timeout.
A "busy" reply (the server closed the connection without reading the request) is sent again.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import time
from pathlib import Path
from typing import Any

from orchestrator.control.peercred import peer_credentials, trusted
from orchestrator.control.socketdir import check_private, open_dir, socket_address
from orchestrator.errors import ControlError, DaemonNotRunningError

#: How long a client keeps retrying a refused connect: long enough for a starting daemon to get
#: from bind() to listen(), short enough that a socket left by a killed daemon reads as "not
#: running" at once.
REFUSED_RETRY_S = 1.0


class _TimedOut(ControlError):
    """No answer before the deadline."""


def _not_running(path: Path, why: str = "") -> DaemonNotRunningError:
    return DaemonNotRunningError(
        f"no daemon is listening on {path}{why}; start one with 'orchestrator run'"
    )


def request(path: Path, payload: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
    """Send one request to the daemon and return its reply.

    Raises DaemonNotRunningError when nobody listens on ``path``, and ControlError when the
    socket's directory or the listening process is not trusted (see the package docstring),
    when no answer comes within ``timeout_s``, or when the daemon answers with an error.
    """
    deadline = time.monotonic() + timeout_s
    directory = path.parent
    busy: dict[str, Any] | None = None
    while True:
        try:
            reply = _exchange(path, directory, payload, deadline, timeout_s)
        except _TimedOut:
            if busy is None:
                raise
            # the deadline passed during a retry after "busy": the daemon never read this
            # request, and "busy" is what the user should hear (not "did not answer")
            reply = busy
            break
        # "busy" with busy=True: the server closed us unread, so sending again is safe.
        if reply.get("ok") or not reply.get("busy") or time.monotonic() + 0.05 > deadline:
            break
        busy = reply
        time.sleep(0.02 + 0.03 * random.random())
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "unknown error")))
    return reply


def _exchange(
    path: Path, directory: Path, payload: dict[str, Any], deadline: float, timeout_s: float
) -> dict[str, Any]:
    """One connection: connect (to a trusted listener only), send, read the one-line answer."""
    with _open_socket(path, directory, deadline, timeout_s) as sock:
        _check_peer(sock, path)
        raw = _send_and_read(sock, path, payload, deadline, timeout_s)
    if not raw:
        raise ControlError(f"{path}: the daemon closed the connection without answering")
    try:
        reply = json.loads(raw)
    except ValueError as exc:
        raise ControlError("the daemon's answer was not JSON") from exc
    if not isinstance(reply, dict):
        raise ControlError("the daemon's answer was not a JSON object")
    return reply


def _open_socket(path: Path, directory: Path, deadline: float, timeout_s: float) -> socket.socket:
    """Connect to ``path`` through its directory, which must be private."""
    try:
        dir_fd = open_dir(directory)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise _not_running(path) from exc
    except OSError as exc:
        raise ControlError(
            f"{directory}: cannot open the control socket's directory: {exc.strerror or exc}"
        ) from exc
    try:
        try:
            os.stat(path.name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError as exc:
            raise _not_running(path) from exc
        except OSError as exc:
            raise ControlError(f"{path}: {exc.strerror or exc}") from exc
        check_private(dir_fd, directory)
        return _connect(path, socket_address(path, dir_fd), deadline, timeout_s)
    finally:
        os.close(dir_fd)


def _check_peer(sock: socket.socket, path: Path) -> None:
    """Only the same user (or root) may be listening there."""
    try:
        pid, uid = peer_credentials(sock)
    except OSError as exc:
        raise ControlError(
            f"{path}: cannot tell who is listening ({exc.strerror or exc}); not trusting it"
        ) from exc
    if not trusted(uid):
        raise ControlError(
            f"{path}: the process listening there (pid {pid}) runs as uid {uid}, not as "
            f"you (uid {os.getuid()}) or root; not trusting it"
        )


def _send_and_read(
    sock: socket.socket, path: Path, payload: dict[str, Any], deadline: float, timeout_s: float
) -> bytes:
    """Send the request and read the answer's line (empty when the daemon closed at once)."""
    chunks: list[bytes] = []
    try:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        # the server may have answered and closed before our request went out (a "busy" or a
        # refusal): its one line is still in our receive buffer, so read it
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(json.dumps(payload).encode() + b"\n")
        while True:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if chunk.endswith(b"\n"):
                break
    except TimeoutError as exc:
        raise _TimedOut(f"the daemon did not answer within {timeout_s:g} s") from exc
    except OSError as exc:
        if not chunks:  # e.g. reset after a one-line refusal that was already read: fine
            raise ControlError(
                f"{path}: the connection to the daemon failed: {exc.strerror or exc}"
            ) from exc
    return b"".join(chunks)


def _connect(path: Path, address: str, deadline: float, timeout_s: float) -> socket.socket:
    """Connect, retrying a full backlog (EAGAIN) until ``deadline`` and a refusal for up to
    REFUSED_RETRY_S, with a short randomised backoff; never a bare OSError."""
    refused_until = min(deadline, time.monotonic() + REFUSED_RETRY_S)
    delay_s = 0.005
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            sock.connect(address)
            return sock
        except FileNotFoundError as exc:
            sock.close()
            raise _not_running(path) from exc
        except ConnectionRefusedError as exc:
            sock.close()
            if time.monotonic() + delay_s > refused_until:
                raise _not_running(
                    path, " (its socket file is left from a daemon that stopped)"
                ) from exc
        except BlockingIOError as exc:  # EAGAIN: the listen backlog is full
            sock.close()
            if time.monotonic() + delay_s > deadline:
                raise ControlError(
                    f"{path}: the daemon's control socket stayed busy for {timeout_s:g} s; "
                    "try again"
                ) from exc
        except TimeoutError as exc:
            sock.close()
            raise _TimedOut(f"the daemon did not answer within {timeout_s:g} s") from exc
        except OSError as exc:
            sock.close()
            raise ControlError(
                f"{path}: cannot connect to the daemon: {exc.strerror or exc}"
            ) from exc
        time.sleep(delay_s * (0.5 + random.random()))
        delay_s = min(delay_s * 2, 0.1)
