"""The state directory belongs to its user alone: directories 0700, files 0600, whatever the umask.

Run output, command lines and history may carry secrets, and a state directory made by
``mkdir -p`` under the usual umask 022 lets every local user read them (issue 8, point 7). So
each directory and file the daemon creates there gets an explicit mode, set again with chmod
after creation because a umask can only remove bits (umask 277 would leave 0500). The daemon's
umask itself is left alone: the jobs inherit it for their own files, and must keep the user's.

What is covered: the state directory, ``runs/`` and each run directory, an executor's spool
directory and the run directories under it (here); ``runs.sqlite`` and its ``-wal``/``-shm``
(``orchestrator.store.sqlite``, via ``create_private_file``); the lease files
(``orchestrator.lease``); ``shim.json``, ``child.json``, ``result.json`` and ``output.log``
(``orchestrator.executors.shim`` and ``local``); the control socket (``orchestrator.control``).
Files left by an older release inside a directory made 0700 here are not rewritten: nobody
else can reach them any more.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.errors import OrchestratorError, UnsafePermissionsError
from orchestrator.logs import get_logger

if TYPE_CHECKING:
    from orchestrator.settings import Settings

__all__ = [
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "StateDirError",
    "create_private_file",
    "ensure_private_dir",
    "make_run_dir",
    "open_private_append",
    "prepare_state_dir",
]

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600

log = get_logger(component="statedir")


class StateDirError(OrchestratorError):
    """The state directory cannot hold the run store safely."""


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` mode 0700 (missing parents with the default mode), or make an existing
    one 0700; returns ``path``.

    Raises ``UnsafePermissionsError`` when ``path`` is not a directory or belongs to another
    user (its owner could read everything, and we could not chmod it), ``OSError`` when it
    cannot be created.
    """
    path = Path(path)
    try:
        path.mkdir(mode=PRIVATE_DIR_MODE)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
    except FileExistsError:
        pass  # checked below like any existing directory
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePermissionsError(f"{path} exists and is not a directory")
    if info.st_uid != os.geteuid():
        raise UnsafePermissionsError(
            f"{path} belongs to uid {info.st_uid}, not to this user (uid {os.geteuid()}): "
            "its owner could read every run's output and history; use a directory of your own "
            "(--state-dir or ORCH_STATE_DIR, or the executor's spool directory setting)"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode != PRIVATE_DIR_MODE:
        os.chmod(path, PRIVATE_DIR_MODE)
        if mode & 0o077:
            log.warning(
                "private_dir_mode_tightened", path=str(path), old_mode=f"{mode:04o}", mode="0700"
            )
    return path


def prepare_state_dir(settings: Settings) -> None:
    """The daemon's start: the state directory and ``runs/`` exist, ours, 0700 (raises as
    ``ensure_private_dir``), on a file system whose POSIX locks work (orchestrator.locks;
    raises ``StateDirError`` unless ``ORCH_STATE_DIR_FORCE=1``)."""
    from orchestrator import locks
    from orchestrator.fsinfo import filesystem_type

    ensure_private_dir(settings.state_dir)
    ensure_private_dir(settings.runs_dir)
    problem = locks.probe(settings.state_dir)
    if problem is None:
        return
    fstype = filesystem_type(settings.state_dir)
    if locks.forced():
        log.warning(
            "state_dir_without_locks_forced",
            state_dir=str(settings.state_dir),
            fstype=fstype,
            problem=problem,
        )
        return
    raise StateDirError(
        f"{settings.state_dir} ({fstype}): {problem}. The run store (SQLite) needs working "
        "POSIX locks, or two writers can corrupt it: keep the state directory on a local disk "
        "or on a file system that keeps them (systemd/README.md), or set "
        f"{locks.FORCE_ENV}=1 to run there anyway"
    )


def make_run_dir(run_dir: Path) -> Path:
    """A new run's directory, 0700; returns ``run_dir``. Raises as ``ensure_private_dir``.

    A missing parent (``runs/`` or an executor's spool directory) is created 0700 too; an
    existing one is left as it is: the run directory's own mode already keeps others out, and
    a spool set to a shared place (such as ``$SCRATCH``) must not have its mode changed."""
    if not run_dir.parent.is_dir():
        ensure_private_dir(run_dir.parent)
    return ensure_private_dir(run_dir)


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists; an existing file of ours with
    group or other bits is made 0600. Raises ``OSError`` when it cannot be created.

    Used before SQLite opens a database: SQLite creates ``-wal`` and ``-shm`` with the
    database file's mode, so they follow.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    except FileExistsError:
        tighten_file(path)
        return
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)


def tighten_file(path: Path) -> None:
    """Make an existing file of ours 0600 when others may read it; a missing file, one of
    another user, or a read-only file system is left as it is (logged)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    if info.st_uid != os.geteuid() or not stat.S_IMODE(info.st_mode) & 0o077:
        return
    try:
        os.chmod(path, PRIVATE_FILE_MODE)
    except OSError as exc:
        log.warning("private_file_chmod_failed", path=str(path), error=str(exc))
        return
    log.warning(
        "private_file_mode_tightened",
        path=str(path),
        old_mode=f"{stat.S_IMODE(info.st_mode):04o}",
        mode="0600",
    )


def open_private_append(path: Path) -> int:
    """An O_APPEND file descriptor on ``path``, created 0600 when missing (close-on-exec)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != PRIVATE_FILE_MODE:
            os.fchmod(fd, PRIVATE_FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd
