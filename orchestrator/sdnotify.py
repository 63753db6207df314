"""sd_notify(3) without libsystemd: a few newline-separated assignments in one datagram.

The protocol (https://systemd.io/NOTIFY/ and sd_notify(3)): systemd puts the path of an
AF_UNIX datagram socket in ``NOTIFY_SOCKET``; a leading ``@`` means the Linux abstract namespace
(the ``@`` becomes a NUL byte). The service sends ``READY=1`` once it is up, ``STATUS=...`` for
``systemctl status``, ``WATCHDOG=1`` at least every ``WATCHDOG_USEC`` microseconds (we send every
half of that, as sd_watchdog_enabled(3) advises), ``RELOADING=1`` then ``READY=1`` around a
reload, and ``STOPPING=1`` when it begins to shut down.

Outside systemd (scrontab, a terminal) ``NOTIFY_SOCKET`` is unset and every method is a no-op.
A notification that cannot be sent is logged and dropped: the daemon must never fall over
because systemd went away.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

from orchestrator.logs import get_logger

log = get_logger(component="sdnotify")

#: ``systemctl status`` shows STATUS on one line; longer text only wraps or gets cut there.
STATUS_MAX_CHARS = 200


def _monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _one_line(text: str, max_chars: int = STATUS_MAX_CHARS) -> str:
    line = " ".join(text.split())  # newlines would start a new assignment in the datagram
    if len(line) > max_chars:
        line = line[: max_chars - 1].rstrip() + "…"
    return line


class Notifier:
    """Sends sd_notify messages to the socket systemd handed us, or nothing when there is none."""

    def __init__(self, address: str | None = None, watchdog_usec: int | None = None) -> None:
        """``address``: NOTIFY_SOCKET as systemd writes it (a path, or ``@name`` for the
        abstract namespace); ``watchdog_usec``: the watchdog timeout this process must meet."""
        self.address = address or None
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._failing = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, pid: int | None = None) -> Notifier:
        """A notifier configured from NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID.

        The watchdog applies to us only when WATCHDOG_PID is unset or equals our pid: a child
        that inherited the environment must not think it is the one being watched.
        """
        env = os.environ if environ is None else environ
        our_pid = os.getpid() if pid is None else pid
        watchdog_usec: int | None = None
        raw_usec = env.get("WATCHDOG_USEC", "").strip()
        raw_pid = env.get("WATCHDOG_PID", "").strip()
        if raw_usec:
            try:
                usec = int(raw_usec)
                watchdog_pid = int(raw_pid) if raw_pid else our_pid
            except ValueError:
                log.warning("watchdog_env_unparsable", watchdog_usec=raw_usec, watchdog_pid=raw_pid)
            else:
                if watchdog_pid == our_pid and usec > 0:
                    watchdog_usec = usec
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog_usec)

    @property
    def enabled(self) -> bool:
        """Whether there is a socket to notify (we run under systemd with Type=notify)."""
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to call watchdog(): half of WATCHDOG_USEC, or None when no watchdog."""
        if self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2 / 1_000_000

    def ready(self) -> bool:
        """Startup is complete (READY=1): systemctl start returns and dependants start."""
        return self.send("READY=1")

    def status(self, text: str) -> bool:
        """Set the one-line status that ``systemctl status`` shows (newlines removed)."""
        return self.send(f"STATUS={_one_line(text)}")

    def reloading(self) -> bool:
        """A reload has begun (RELOADING=1 with MONOTONIC_USEC, required by systemd >= 253 for
        Type=notify-reload so it can match the message to the reload it asked for)."""
        return self.send(f"RELOADING=1\nMONOTONIC_USEC={_monotonic_usec()}")

    def ready_after_reload(self) -> bool:
        """The reload is complete (READY=1 again)."""
        return self.send("READY=1")

    def stopping(self) -> bool:
        """Shutdown has begun (STOPPING=1); systemd then waits up to TimeoutStopSec."""
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        """Keep-alive for WatchdogSec (WATCHDOG=1); call every watchdog_interval_s seconds."""
        return self.send("WATCHDOG=1")

    def send(self, message: str) -> bool:
        """Send one datagram; True when it was sent, False when disabled or it failed.

        Never raises: a failure is logged once (and again after a success), so a watchdog
        ping every few seconds to a vanished socket does not flood the log.
        """
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode("utf-8"), target)
        except OSError as exc:
            if not self._failing:
                log.warning(
                    "sd_notify_failed",
                    notify_socket=self.address,
                    notification=message.split("\n", 1)[0],
                    error=str(exc),
                )
            self._failing = True
            return False
        self._failing = False
        return True
