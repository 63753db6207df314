"""Which file system a path lives on, and whether that file system is shared between nodes.

Two things break on network file systems (NFS, GPFS, Lustre, DVS, ...), which is where home and
community directories live on HPC clusters such as NERSC Perlmutter:

- inotify only reports changes made by the local kernel, so a manifest edited on another login
  node is never seen: the watcher must poll there.
- SQLite's POSIX locks are unreliable or absent there (https://www.sqlite.org/faq.html#q5), and
  WAL mode needs shared memory between the processes using the database, which only works on
  one host: the state directory must be local, and the daemon warns when it is not.

The answer comes from ``/proc/self/mountinfo`` (or ``/proc/mounts``): the mount whose mount point
is the longest path-component prefix of the resolved path. No subprocess, no statfs magic numbers.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

#: File system types on which inotify misses remote changes and file locking cannot be trusted.
#: ``dvs`` is Cray's Data Virtualization Service (Perlmutter's view of GPFS on compute nodes);
#: ``fuse.*`` entries are FUSE clients of remote storage; ``9p`` and ``virtiofs`` share a host
#: directory into a VM or WSL, where the host's writes bypass the guest's inotify.
NETWORK_FILESYSTEMS: frozenset[str] = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "gpfs",
        "lustre",
        "beegfs",
        "ceph",
        "fuse.ceph-fuse",
        "fuse.cephfs",
        "glusterfs",
        "fuse.glusterfs",
        "fuse.sshfs",
        "sshfs",
        "dvs",
        "panfs",
        "afs",
        "9p",
        "virtiofs",
        "wekafs",
        "fuse.juicefs",
        "fuse.s3fs",
        "fuse.gcsfuse",
    }
)

UNKNOWN = "unknown"

_MOUNT_TABLES = (Path("/proc/self/mountinfo"), Path("/proc/mounts"))
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    """One line of the mount table: where it is mounted, its type and what was mounted."""

    mount_point: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in paths as \040, \011, \012, \134.
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """Mounts from the text of ``/proc/PID/mountinfo`` (proc(5)), in table order.

    Fields: ``id parent major:minor root mount_point options [optional...] - fstype source
    super_options``; the optional fields end at the lone ``-`` separator.
    """
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            mounts.append(
                Mount(
                    mount_point=_unescape(fields[4]),
                    fstype=fields[sep + 1],
                    source=_unescape(fields[sep + 2]),
                )
            )
        except (ValueError, IndexError):
            continue  # a malformed line says nothing useful about the path we look for
    return mounts


def parse_proc_mounts(text: str) -> list[Mount]:
    """Mounts from the text of ``/proc/mounts`` (fstab(5) layout: source, mount point, type)."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            mounts.append(Mount(_unescape(fields[1]), fields[2], _unescape(fields[0])))
    return mounts


def read_mounts() -> list[Mount]:
    """The mount table of this process; empty where no /proc mount table can be read."""
    for table in _MOUNT_TABLES:
        try:
            text = table.read_text(encoding="utf-8", errors="surrogateescape")
        except OSError:
            continue
        parse = parse_mountinfo if table.name == "mountinfo" else parse_proc_mounts
        mounts = parse(text)
        if mounts:
            return mounts
    return []


def _is_under(path: str, mount_point: str) -> bool:
    if mount_point == "/":
        return True
    return path == mount_point or path.startswith(mount_point.rstrip("/") + "/")


def find_mount(path: str | os.PathLike[str], mounts: list[Mount] | None = None) -> Mount | None:
    """The mount that holds ``path`` (which need not exist yet), or None when unknown.

    Symbolic links are resolved first (``/global/homes`` style links point into the real
    mount). Among mounts with the same mount point the last one listed wins, because a later
    mount hides an earlier one at the same place.
    """
    resolved = str(Path(path).expanduser().resolve(strict=False))
    table = read_mounts() if mounts is None else mounts
    best: Mount | None = None
    for mount in table:
        if _is_under(resolved, mount.mount_point) and (
            best is None or len(mount.mount_point) >= len(best.mount_point)
        ):
            best = mount
    return best


def filesystem_type(path: str | os.PathLike[str], mounts: list[Mount] | None = None) -> str:
    """The file system type of the mount holding ``path`` ('ext4', 'nfs4', 'gpfs', ...).

    Returns ``'unknown'`` where the mount table cannot be read (not Linux, /proc not mounted).
    """
    mount = find_mount(path, mounts)
    return mount.fstype if mount is not None else UNKNOWN


def is_network_filesystem(path: str | os.PathLike[str], mounts: list[Mount] | None = None) -> bool:
    """Whether ``path`` is on a file system shared between nodes (see NETWORK_FILESYSTEMS).

    Unknown types count as local: the callers use this to warn or to switch to polling, and a
    false alarm on every start would teach users to ignore the warning.
    """
    return filesystem_type(path, mounts) in NETWORK_FILESYSTEMS
