"""Does the state directory's file system keep POSIX locks? SQLite's whole guard against two
writers is ``fcntl`` byte-range locks (https://www.sqlite.org/lockingv3.html); where they
fail, or are granted to everyone, two processes can write the run store at once and corrupt
it. The daemon asks at start (:func:`probe`) and refuses such a directory unless
``ORCH_STATE_DIR_FORCE=1``.

The probe is functional, not a list of file systems: it takes an exclusive lock on a scratch
file and has a second process try for the same lock, which must be refused. What it cannot
see from one host is whether locks also hold between hosts: that is why a state directory on
a network file system (NFS, GPFS, Lustre, DVS) also makes the store use a rollback journal
instead of WAL (WAL's shared memory works between processes of one host only; see
store/sqlite.py and systemd/README.md for the answer on Perlmutter).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import subprocess
import sys
from pathlib import Path

FORCE_ENV = "ORCH_STATE_DIR_FORCE"
PROBE_NAME = ".lock-probe"

# The second process: exit 0 when it got the lock (locks do not exclude), 1 when refused.
_OTHER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    sys.exit(1)
sys.exit(0)
"""


def probe(directory: Path, lockf: object = fcntl.lockf) -> str | None:
    """None when POSIX locks work in ``directory``; else what is wrong, in words. ``lockf``
    is the lock call (a test gives one that fails as on a file system without locks: no such
    file system can be mounted here)."""
    # one scratch file per process: two daemons starting at once must not see each other's
    # probe lock as a file system without locks (the lease tells them apart)
    path = directory / f"{PROBE_NAME}.{os.getpid()}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # type: ignore[operator]
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, "?")
            return f"a POSIX lock cannot be taken there ({name}: {exc.strerror or exc})"
        try:
            other = subprocess.run(
                [sys.executable, "-c", _OTHER, str(path)], timeout=20, check=False
            )
        except subprocess.TimeoutExpired:
            return "a second process waited more than 20 s for a lock it should have been refused"
        if other.returncode == 0:
            return "a second process was given a lock this one holds: locks do not exclude"
        return None
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()


def forced() -> bool:
    return os.environ.get(FORCE_ENV, "") not in ("", "0")
