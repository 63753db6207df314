"""The control socket's directory: it must be ours and closed to everyone else, and a path
too long for sun_path is reached through the opened directory (``/proc/self/fd/<fd>``); the
reasons are in the package docstring (``orchestrator.control``)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from orchestrator.errors import ControlError

_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes with the terminating NUL


def check_private(dir_fd: int, directory: Path) -> None:
    """ControlError unless the opened directory belongs to us and nobody else may enter it."""
    info = os.fstat(dir_fd)
    me = os.getuid()
    if info.st_uid != me:
        raise ControlError(
            f"{directory}: the control socket's directory belongs to uid {info.st_uid}, not to "
            f"you (uid {me}); refusing to use a socket there"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise ControlError(
            f"{directory}: the control socket's directory is mode {mode:04o}, open to other "
            f"users; make it private with 'chmod 700 {directory}'"
        )


def open_dir(directory: Path) -> int:
    return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def socket_address(path: Path, dir_fd: int) -> str:
    """What to bind or connect to: the path itself when it fits in sun_path, else the same
    socket reached through the open directory (see the package docstring)."""
    length = len(os.fsencode(path))
    if length <= _SUN_PATH_MAX:
        return str(path)
    via_fd = f"/proc/self/fd/{dir_fd}"
    if not os.path.isdir(via_fd):
        raise ControlError(
            f"{path}: {length} bytes is too long for a Unix socket (at most {_SUN_PATH_MAX}) "
            f"and /proc is not mounted to shorten it; use a shorter state directory"
        )
    return f"{via_fd}/{path.name}"
