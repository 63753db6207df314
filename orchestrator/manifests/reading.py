"""Reading manifest files without ever blocking the caller (issue 8).

A jobs directory can hold anything a user or a tool puts there, and the daemon reads it as
root on some deployments. What is refused, each as a problem at ``path:1:1``:

- anything but a regular file: a FIFO (opening one for reading waits for a writer, forever),
  a device, a socket, a directory named ``x.yaml``, a dangling symbolic link;
- a regular file on a kernel pseudo file system (procfs, sysfs, ...): those report size 0 and a
  read can block for good (``/proc/kmsg`` waits for the next kernel message) or consume what it
  reads; told apart by ``fstatfs``'s ``f_type`` on the opened descriptor;
- a file over ``MAX_MANIFEST_BYTES``, by its size and again by what a read returns (a file can
  grow while it is read, and some file systems report no size), before any parsing;
- a file (or a listing) that does not answer within a deadline: a hung NFS server blocks
  ``stat``, ``open`` and ``read`` in the kernel, where no signal or timeout reaches them.

The deadline: each file's I/O (stat, open, fstat, read) runs in its own short-lived daemon
thread, and the caller waits at most ``timeout_s`` for it. A thread that does not finish is
left behind (nothing can interrupt it) and recorded: while it is stuck, the same path is not
read again (the caller is told at once that the earlier read has not finished), and no more
than ``MAX_STUCK_READS`` file reads (plus one listing per directory) are ever left behind, so
a hung mount costs a bounded number of threads. A stuck read that finishes at last closes its
file and is forgotten; the path is read normally from then on. This registry is the only state
shared between callers; it is guarded by a lock, so that scans may run in any thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from orchestrator.errors import ManifestError, OrchestratorError, UnsafePermissionsError
from orchestrator.manifests.limits import MAX_MANIFEST_BYTES
from orchestrator.manifests.positions import single

READ_TIMEOUT_S = 5.0
MAX_STUCK_READS = 16

# statfs(2) f_type of the kernel's pseudo file systems (linux/magic.h).
_PSEUDO_FILESYSTEMS = {
    0x9FA0: "procfs",
    0x62656572: "sysfs",
    0x64626720: "debugfs",
    0x74726163: "tracefs",
    0x73636673: "securityfs",
    0x62656570: "configfs",
    0x27E0EB: "cgroup",
    0x63677270: "cgroup2",
    0xDE5E81E4: "efivarfs",
    0x6165676C: "pstore",
    0xCAFE4A11: "bpf",
}
_NOT_REGULAR = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)

T = TypeVar("T")


class ReadTimeoutError(OrchestratorError):
    """A file system call did not return within its deadline (or an earlier one on the same
    path still has not); the message says which and for how long."""


class JobsDirUnreadableError(OrchestratorError):
    """The jobs directory could not be listed (it did not answer within the deadline); the
    caller must keep what it has rather than read this as an empty directory."""


# --------------------------------------------------------------------------- deadlines


@dataclass
class _Stuck:
    thread: threading.Thread
    since_monotonic: float


_stuck_lock = threading.Lock()
_stuck: dict[str, _Stuck] = {}


def stuck_reads() -> dict[str, float]:
    """Paths whose I/O is still stuck, with the seconds they have been; for status and tests."""
    now = time.monotonic()
    with _stuck_lock:
        _forget_finished()
        return {key: now - s.since_monotonic for key, s in _stuck.items()}


def _forget_finished() -> None:
    for key in [k for k, s in _stuck.items() if not s.thread.is_alive()]:
        del _stuck[key]


def call_with_deadline(key: str, fn: Callable[[], T], timeout_s: float, capped: bool = True) -> T:
    """``fn()`` run in a daemon thread; its result or exception, or ReadTimeoutError when it
    has not returned within ``timeout_s`` (or an earlier call for ``key`` is still stuck).

    ``capped``: refused while MAX_STUCK_READS calls are stuck. Listing a directory is not
    capped (its one key bounds it), so that files stuck on another mount cannot stop the
    listing of a jobs directory that answers.
    """
    with _stuck_lock:
        _forget_finished()
        earlier = _stuck.get(key)
        if earlier is not None:
            waited_s = time.monotonic() - earlier.since_monotonic
            raise ReadTimeoutError(
                f"an earlier read has not finished after {waited_s:.0f} s (hung file system?); "
                "not read again until it does"
            )
        if capped and len(_stuck) >= MAX_STUCK_READS:
            raise ReadTimeoutError(
                f"not read: {len(_stuck)} earlier reads have not finished (hung file system?)"
            )
    outcome: list[tuple[bool, object]] = []

    def target() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as exc:  # handed to the caller, which re-raises it
            outcome.append((False, exc))

    thread = threading.Thread(target=target, name=f"orchestrator-read {key}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        with _stuck_lock:
            _stuck[key] = _Stuck(thread, time.monotonic())
        raise ReadTimeoutError(
            f"read did not finish within {timeout_s:g} s (hung file system?); "
            "not read again until it does"
        )
    ok, value = outcome[0]
    if not ok:
        assert isinstance(value, BaseException)
        raise value
    return value  # type: ignore[return-value]  # fn's T, through the list


# --------------------------------------------------------------------------- permissions


def check_permissions(path: Path, st: os.stat_result | None = None) -> None:
    """Refuse a file or directory that other users can write: manifests run commands.

    Group- or world-writable, or owned by someone other than this user or root, is refused,
    like sshd's StrictModes; the message says how to fix it.
    """
    st = st or path.stat()
    kind = "jobs directory" if stat.S_ISDIR(st.st_mode) else "manifest"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafePermissionsError(
            f"{path}: {kind} is writable by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"manifests run commands, so this is refused: run 'chmod go-w {path}'"
        )
    if st.st_uid not in (os.geteuid(), 0):
        raise UnsafePermissionsError(
            f"{path}: {kind} is owned by uid {st.st_uid}, not by this user ({os.geteuid()}) "
            "or root; manifests run commands, so this is refused"
        )


# --------------------------------------------------------------------------- reading


def stat_key(st: os.stat_result) -> tuple[int, ...]:
    """What identifies one version of a file for the scan cache. The change time is in it: a
    rewrite that keeps size and modification time (``cp -p``, ``rsync -t``, ``touch -r``)
    still changes ``st_ctime``, which no user can set."""
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_dev)


@dataclass(frozen=True)
class FileRead:
    """One look at a manifest file: its stat (None where there was none to take), its bytes
    (None when unchanged since ``known_key``, or on a problem), the problem, and when the file
    last changed (epoch seconds; None where unknown)."""

    st: os.stat_result | None
    data: bytes | None
    error: ManifestError | None
    changed_at_s: float | None
    gone: bool = False  # removed between listing and reading

    @property
    def key(self) -> tuple[int, ...] | None:
        return stat_key(self.st) if self.st is not None else None


def read_manifest_file(
    path: Path,
    check_perms: bool = True,
    known_key: tuple[int, ...] | None = None,
    timeout_s: float = READ_TIMEOUT_S,
    limit_bytes: int = MAX_MANIFEST_BYTES,
) -> FileRead:
    """Look at one manifest file under a deadline; never raises for the file's own problems
    (they are in ``error``), and never blocks longer than ``timeout_s``."""
    try:
        return call_with_deadline(
            str(path), lambda: _read(path, check_perms, known_key, limit_bytes), timeout_s
        )
    except ReadTimeoutError as exc:
        return FileRead(None, None, single(path, 1, 1, "", str(exc)), None)


def list_directory(jobs_dir: Path, timeout_s: float = READ_TIMEOUT_S) -> list[str]:
    """The entry names of ``jobs_dir`` (empty when it does not exist); JobsDirUnreadableError
    when the listing does not finish within ``timeout_s``."""

    def names() -> list[str]:
        try:
            with os.scandir(jobs_dir) as entries:
                return [e.name for e in entries]
        except FileNotFoundError:
            return []

    try:
        return call_with_deadline(f"{jobs_dir}/", names, timeout_s, capped=False)
    except ReadTimeoutError as exc:
        raise JobsDirUnreadableError(f"{jobs_dir}: jobs directory not listed: {exc}") from exc


def _read(
    path: Path, check_perms: bool, known_key: tuple[int, ...] | None, limit_bytes: int
) -> FileRead:
    """The work of read_manifest_file, in the deadline's thread."""

    def problem(message: str, st: os.stat_result | None) -> FileRead:
        changed = max(st.st_mtime, st.st_ctime) if st is not None else None
        return FileRead(st, None, single(path, 1, 1, "", message), changed)

    st = _stat(path, problem)
    if isinstance(st, FileRead):
        return st
    refused = _refused(path, st, check_perms)
    if refused is not None:
        return problem(refused, st)
    if known_key is not None and stat_key(st) == known_key:
        return FileRead(st, None, None, max(st.st_mtime, st.st_ctime))
    if st.st_size > limit_bytes:
        return problem(_too_big(st.st_size, limit_bytes), st)
    try:
        # O_NONBLOCK: if the path was swapped for a FIFO since the stat, open does not wait.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        return problem(f"cannot read: {exc.strerror or exc}", st)
    try:
        return _read_open(path, fd, check_perms, limit_bytes, problem)
    except OSError as exc:
        return problem(f"cannot read: {exc.strerror or exc}", st)
    finally:
        os.close(fd)


def _stat(
    path: Path, problem: Callable[[str, os.stat_result | None], FileRead]
) -> os.stat_result | FileRead:
    """The file's stat, or what reading it comes to when there is none (gone, a dangling link,
    a link loop, an error)."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        try:
            link = os.lstat(path)
        except FileNotFoundError:
            return FileRead(None, None, None, None, gone=True)
        if stat.S_ISLNK(link.st_mode):
            return problem(f"dangling symbolic link to {os.readlink(path)}", link)
        return FileRead(None, None, None, None, gone=True)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return problem("symbolic link loop (too many levels of links)", None)
        return problem(f"cannot read: {exc.strerror or exc}", None)


def _refused(path: Path, st: os.stat_result, check_perms: bool) -> str | None:
    """Why the file is not even opened, if it is not: opening a FIFO waits for a writer, and
    opening a device can act on it (a tape rewinds); others may write it."""
    kind = next((what for test, what in _NOT_REGULAR if test(st.st_mode)), None)
    if kind is not None or not stat.S_ISREG(st.st_mode):
        return f"not a regular file ({kind or 'of an unknown type'})"
    if check_perms:
        try:
            check_permissions(path, st)
        except UnsafePermissionsError as exc:
            return str(exc).split(": ", 1)[1]
    return None


def _read_open(
    path: Path,
    fd: int,
    check_perms: bool,
    limit_bytes: int,
    problem: Callable[[str, os.stat_result | None], FileRead],
) -> FileRead:
    """Read the opened file, checked again as it is now (it may have been swapped)."""
    opened = os.fstat(fd)
    if not stat.S_ISREG(opened.st_mode):
        return problem("not a regular file (it changed while being opened)", opened)
    filesystem = _pseudo_filesystem(fd)
    if filesystem is not None:
        return problem(
            f"a file on {filesystem}, a kernel pseudo file system whose files can block "
            "forever when read; a manifest must be an ordinary file",
            opened,
        )
    if opened.st_size > limit_bytes:
        return problem(_too_big(opened.st_size, limit_bytes), opened)
    chunks: list[bytes] = []
    size = 0
    while size <= limit_bytes:
        chunk = os.read(fd, limit_bytes + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit_bytes:
        return problem(_too_big(None, limit_bytes), opened)
    if check_perms:
        try:
            check_permissions(path, opened)
        except UnsafePermissionsError as exc:
            return problem(str(exc).split(": ", 1)[1], opened)
    return FileRead(opened, b"".join(chunks), None, max(opened.st_mtime, opened.st_ctime))


def _too_big(size: int | None, limit_bytes: int) -> str:
    what = f"{size:,} bytes" if size is not None else "more than that"
    return (
        f"too large for a manifest ({what}; at most {limit_bytes:,} bytes, "
        f"{limit_bytes / (1024 * 1024):g} MiB)"
    )


# --------------------------------------------------------------------------- fstatfs


class _StatFs(ctypes.Structure):
    # struct statfs starts with f_type (__fsword_t: a long) on every Linux ABI; the rest is
    # room for the fields this never reads (the kernel writes 120 bytes on 64-bit ABIs).
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_char * 256)]


def _load_fstatfs() -> Callable[[int], int | None] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fstatfs = libc.fstatfs
    except (OSError, AttributeError):  # not Linux/glibc/musl: the deadline still protects
        return None
    fstatfs.argtypes = [ctypes.c_int, ctypes.POINTER(_StatFs)]
    fstatfs.restype = ctypes.c_int

    def f_type(fd: int) -> int | None:
        buf = _StatFs()
        if fstatfs(fd, ctypes.byref(buf)) != 0:
            return None
        return int(buf.f_type) & 0xFFFFFFFF  # some ABIs sign-extend the 32-bit magic numbers

    return f_type


_fstatfs_type = _load_fstatfs()


def _pseudo_filesystem(fd: int) -> str | None:
    """The name of the kernel pseudo file system holding ``fd``, or None."""
    if _fstatfs_type is None:
        return None
    return _PSEUDO_FILESYSTEMS.get(_fstatfs_type(fd) or 0)
