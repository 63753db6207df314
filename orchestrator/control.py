"""The daemon's control socket: one JSON request line in, one JSON reply line out.

Requests: ``{"op": "ping" | "status" | "trigger" | "cancel" | "reload", ...}``. Replies:
``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. The socket is created mode 0600
and the peer's uid is checked (SO_PEERCRED): only the daemon's own user (or root) may drive it.
Requests are handed to the daemon's main loop, which answers them; this module never touches
run state itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from orchestrator.errors import ControlError, DaemonNotRunningError

log = structlog.get_logger("orchestrator.control")

Handler = Callable[[dict[str, Any]], dict[str, Any]]
MAX_REQUEST_BYTES = 1 << 20


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    handle_request_fn: Handler


class _RequestHandler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        sock = self.request
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
        except OSError:
            uid = -1
        if uid not in (os.getuid(), 0):
            self._reply({"ok": False, "error": f"uid {uid} may not control this daemon"})
            return
        line = self.rfile.readline(MAX_REQUEST_BYTES)
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("request is not an object")
        except ValueError as exc:
            self._reply({"ok": False, "error": f"bad request: {exc}"})
            return
        try:
            reply = self.server.handle_request_fn(request)
        except Exception as exc:
            log.exception("control_request_failed", op=request.get("op"))
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        self._reply(reply)

    def _reply(self, reply: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            self.wfile.write(json.dumps(reply, default=str).encode() + b"\n")


class ControlServer:
    """Serves the control socket on a background thread."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        # A socket file left by a daemon that died is stale: the lease guarantees that no
        # other daemon serves this state directory, so it is safe to remove.
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old_umask = os.umask(0o177)
        try:
            server = _Server(str(self.path), _RequestHandler)
        finally:
            os.umask(old_umask)
        server.handle_request_fn = self._handler
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="control", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def request(path: Path, payload: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
    """Send one request to the daemon; raise DaemonNotRunningError when nobody listens and
    ControlError when the daemon answers with an error."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonNotRunningError(
                f"no daemon is listening on {path}; start one with 'orchestrator run'"
            ) from exc
        sock.sendall(json.dumps(payload).encode() + b"\n")
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if chunk.endswith(b"\n"):
                break
    except TimeoutError as exc:
        raise ControlError(f"the daemon did not answer within {timeout_s:g} s") from exc
    finally:
        sock.close()
    try:
        reply = json.loads(b"".join(chunks))
    except ValueError as exc:
        raise ControlError("the daemon's answer was not JSON") from exc
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "unknown error")))
    return dict(reply)
