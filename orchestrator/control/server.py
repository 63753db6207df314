"""The daemon's end of the control socket.

Under load: one thread accepts connections and reads request lines for all of them (a
selector), so an idle connection costs a file descriptor, not a thread, and is closed after
``IDLE_TIMEOUT_S``. A fixed pool of ``WORKERS`` threads hands complete requests to the daemon
and writes the replies. At most ``MAX_CONNECTIONS`` are open: past that the longest-idle
connection that has sent nothing is closed to make room, and when every one carries a
request, the newcomer is answered "busy" (the client retries that: its request was not read).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from orchestrator.control.peercred import peer_credentials, trusted
from orchestrator.control.socketdir import check_private, open_dir, socket_address
from orchestrator.errors import ControlError

log = structlog.get_logger("orchestrator.control")

Handler = Callable[[dict[str, Any]], dict[str, Any]]

MAX_REQUEST_BYTES = 1 << 20
#: A client writes its request as soon as it has connected; one that has sent no complete line
#: by then is gone, stuck or hostile, and its connection is closed.
IDLE_TIMEOUT_S = 5.0
#: Open connections at once (being read, waiting for a worker, or being answered).
MAX_CONNECTIONS = 256
#: Threads that pass requests to the daemon's main loop (which answers one at a time anyway)
#: and write the replies; a few, so that one slow reader does not hold up the others.
WORKERS = 8
#: socketserver's default of 5 made connects fail with EAGAIN under 16 parallel clients.
LISTEN_BACKLOG = 128


@dataclass(eq=False)
class _Connection:
    """A connection whose request line is still being read."""

    sock: socket.socket
    deadline: float
    buffer: bytearray = field(default_factory=bytearray)


_LISTENER = object()
_WAKE = object()


class ControlServer:
    """Serves the control socket on background threads: one reads, ``workers`` answer."""

    def __init__(
        self,
        path: Path,
        handler: Handler,
        *,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
        workers: int = WORKERS,
    ) -> None:
        self.path = path
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        self.workers = workers
        self._handler = handler
        self._dir_fd: int | None = None
        self._listener: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._reading: dict[socket.socket, _Connection] = {}  # in accept order: oldest first
        self._open = 0  # accepted and not yet closed, in any stage; guarded by _open_lock
        self._open_lock = threading.Lock()
        self._jobs: queue.Queue[tuple[socket.socket, bytes] | None] = queue.Queue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Bind the socket and start serving; ControlError (naming the path) when it cannot."""
        directory = self.path.parent
        try:
            dir_fd = open_dir(directory)
        except OSError as exc:
            raise ControlError(
                f"{directory}: cannot open the control socket's directory: {exc.strerror or exc}"
            ) from exc
        listener: socket.socket | None = None
        try:
            check_private(dir_fd, directory)
            address = socket_address(self.path, dir_fd)
            # A socket file left by a daemon that died is stale: the lease guarantees that no
            # other daemon serves this state directory, so it is safe to remove.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path.name, dir_fd=dir_fd)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(address)
            # No umask juggling around bind (the umask is process-wide, so other threads'
            # files would get it too): the directory is private already, and 0600 on the
            # socket is a second lock.
            os.chmod(self.path.name, 0o600, dir_fd=dir_fd)
            listener.listen(LISTEN_BACKLOG)
            listener.setblocking(False)
        except OSError as exc:
            if listener is not None:
                listener.close()
                with contextlib.suppress(OSError):
                    os.unlink(self.path.name, dir_fd=dir_fd)
            os.close(dir_fd)
            raise ControlError(
                f"{self.path}: cannot serve the control socket: {exc.strerror or exc}"
            ) from exc
        except BaseException:
            if listener is not None:
                listener.close()
            os.close(dir_fd)
            raise
        self._dir_fd, self._listener = dir_fd, listener
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, _LISTENER)
        self._selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()
        # Daemon threads: a worker may be waiting on the main loop when the daemon exits.
        for n in range(self.workers):
            threading.Thread(target=self._work, name=f"control-{n}", daemon=True).start()
        log.info("control_listening", path=str(self.path), address=address)

    def stop(self) -> None:
        """Stop accepting, drop unanswered connections and remove the socket file."""
        if self._thread is None:
            return
        self._stopping.set()
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")
        self._thread.join(5)
        self._thread = None
        for _ in range(self.workers):
            self._jobs.put(None)
        if self._selector is not None:
            self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        if self._dir_fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path.name, dir_fd=self._dir_fd)
            os.close(self._dir_fd)
            self._dir_fd = None

    # ------------------------------------------------------------------ reading thread

    def _serve(self) -> None:
        assert self._selector is not None
        while not self._stopping.is_set():
            try:
                timeout = self._expire_idle(time.monotonic())
                for key, _ in self._selector.select(timeout):
                    if key.data is _LISTENER:
                        self._accept()
                    elif key.data is _WAKE:
                        with contextlib.suppress(OSError):
                            key.fileobj.recv(64)  # type: ignore[union-attr]
                    else:
                        self._read(key.data)
            except Exception:
                # The control socket must outlive any one bad connection.
                log.exception("control_loop_failed")
                time.sleep(0.1)
        for conn in list(self._reading.values()):
            self._drop(conn, None)

    def _expire_idle(self, now: float) -> float | None:
        """Close connections past their deadline; seconds until the next one's (None: none).
        Deadlines grow in accept order, so only the front of ``_reading`` needs a look."""
        while self._reading:
            conn = next(iter(self._reading.values()))
            if conn.deadline > now:
                return conn.deadline - now
            log.info("control_connection_idle", idle_timeout_s=self.idle_timeout_s)
            self._drop(
                conn,
                {"ok": False, "error": f"no request within {self.idle_timeout_s:g} s; closed"},
            )
        return None

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(64):  # a burst at a time, then reads and timeouts get their turn
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # Out of file descriptors (EMFILE/ENFILE): free one; the client waits in the
                # backlog meanwhile.
                log.warning("control_accept_failed", error=str(exc), open=self._open)
                if not self._evict_oldest_idle():
                    time.sleep(0.05)
                return
            self._admit(sock)

    def _admit(self, sock: socket.socket) -> None:
        try:
            _pid, uid = peer_credentials(sock)
        except OSError:
            uid = -1
        if not trusted(uid):
            log.warning("control_client_refused", uid=uid)
            self._reply_and_close(
                sock, {"ok": False, "error": f"uid {uid} may not control this daemon"}
            )
            return
        with self._open_lock:
            full = self._open >= self.max_connections
        if full and not self._evict_oldest_idle():
            log.warning("control_busy", open=self._open)
            self._reply_and_close(
                sock,
                {
                    "ok": False,
                    "busy": True,  # this request was never read: safe for the client to retry
                    "error": f"the daemon is busy ({self.max_connections} control connections "
                    "open); try again",
                },
            )
            return
        sock.setblocking(False)
        conn = _Connection(sock, time.monotonic() + self.idle_timeout_s)
        assert self._selector is not None
        self._selector.register(sock, selectors.EVENT_READ, conn)
        self._reading[sock] = conn
        with self._open_lock:
            self._open += 1

    def _evict_oldest_idle(self) -> bool:
        """Close the connection that has waited longest without sending its request."""
        if not self._reading:
            return False
        conn = next(iter(self._reading.values()))
        log.debug("control_connection_evicted", open=self._open)
        self._drop(conn, {"ok": False, "error": "too many idle control connections; closed"})
        return True

    def _read(self, conn: _Connection) -> None:
        try:
            chunk = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        conn.buffer += chunk
        newline = conn.buffer.find(b"\n")
        if newline < 0 and chunk:
            if len(conn.buffer) > MAX_REQUEST_BYTES:
                self._drop(
                    conn, {"ok": False, "error": f"request longer than {MAX_REQUEST_BYTES} bytes"}
                )
            return
        if not conn.buffer:  # closed before sending anything
            self._drop(conn, None)
            return
        # A whole line, or everything up to the client's EOF: hand it to a worker.
        assert self._selector is not None
        self._selector.unregister(conn.sock)
        del self._reading[conn.sock]
        line = conn.buffer if newline < 0 else conn.buffer[:newline]
        self._jobs.put((conn.sock, bytes(line)))

    def _drop(self, conn: _Connection, reply: dict[str, Any] | None) -> None:
        assert self._selector is not None
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        self._reading.pop(conn.sock, None)
        self._reply_and_close(conn.sock, reply)
        with self._open_lock:
            self._open -= 1

    @staticmethod
    def _reply_and_close(sock: socket.socket, reply: dict[str, Any] | None) -> None:
        """A short explanation, sent without blocking (best effort), then close."""
        if reply is not None:
            with contextlib.suppress(OSError):
                sock.setblocking(False)
                sock.send(json.dumps(reply).encode() + b"\n")
        sock.close()

    # ------------------------------------------------------------------ worker threads

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            sock, line = job
            try:
                self._answer(sock, line)
            except OSError as exc:  # the client went away before reading its reply
                log.info("control_reply_undelivered", error=str(exc))
            except Exception:
                log.exception("control_answer_failed")
            finally:
                sock.close()
                with self._open_lock:
                    self._open -= 1

    def _answer(self, sock: socket.socket, line: bytes) -> None:
        request: Any = None
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("request is not an object")
        except ValueError as exc:
            reply: dict[str, Any] = {"ok": False, "error": f"bad request: {exc}"}
        else:
            try:
                reply = self._handler(request)
            except Exception as exc:
                log.exception("control_request_failed", op=request.get("op"))
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        # A client that does not read its reply cannot hold a worker for longer than this.
        sock.settimeout(self.idle_timeout_s)
        sock.sendall(json.dumps(reply, default=str).encode() + b"\n")
