"""Who is at the other end of a Unix socket (SO_PEERCRED), and whether we trust them: the
daemon's own user or root, checked by the server of each client and by the client of the
server."""

from __future__ import annotations

import os
import socket
import struct


def peer_credentials(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a connected Unix socket."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return pid, uid


def trusted(uid: int) -> bool:
    return uid in (os.getuid(), 0)
