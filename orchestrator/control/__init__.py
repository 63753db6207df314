"""The daemon's control socket: one JSON request line in, one JSON reply line out.

Requests: ``{"op": "ping" | "status" | "trigger" | "cancel" | "reload", ...}``. Replies:
``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. Requests are handed to the daemon's
main loop, which answers them; this package never touches run state itself.

- ``socketdir``: the socket's directory (ours, closed to others) and the address to use.
- ``peercred``: who is at the other end of a connection (SO_PEERCRED), and whom we trust.
- ``server``: ``ControlServer``, the daemon's end: a selector, a worker pool, idle timeouts.
- ``client``: ``request``, the CLI's end, with its retries.

Trust, both ways (issue 8: another local user must neither drive the daemon nor pose as it):

- The socket lives in the state directory, which must belong to the daemon's user and be
  closed to everyone else (0700: the daemon creates it so, systemd's StateDirectoryMode=0700
  too). Server and client both check that before they bind or connect, so nobody else can
  have put a socket there. There is no fallback to a shared directory such as /tmp, where
  another user can create the predictable name first (squat it, or serve forged replies).
- A state directory too deep for an AF_UNIX path (107 bytes) is reached as
  ``/proc/self/fd/<fd>/control.sock``, ``<fd>`` being that directory opened and checked: a
  short path that names exactly the directory checked, through no name anyone could swap.
  ``$XDG_RUNTIME_DIR`` was the other candidate, but it is unset under cron, ssh without
  pam_systemd and system services, so a daemon and its CLI could look in different places.
- The server checks each client's uid (SO_PEERCRED): the daemon's own user or root. The client
  checks the server's uid the same way before it sends a request or believes a reply.

Under load, see ``server`` (and ``client`` for the retries).
"""

from orchestrator.control.client import REFUSED_RETRY_S, request
from orchestrator.control.server import (
    IDLE_TIMEOUT_S,
    LISTEN_BACKLOG,
    MAX_CONNECTIONS,
    MAX_REQUEST_BYTES,
    WORKERS,
    ControlServer,
    Handler,
)

__all__ = [
    "IDLE_TIMEOUT_S",
    "LISTEN_BACKLOG",
    "MAX_CONNECTIONS",
    "MAX_REQUEST_BYTES",
    "REFUSED_RETRY_S",
    "WORKERS",
    "ControlServer",
    "Handler",
    "request",
]
