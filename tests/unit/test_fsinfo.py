"""File system type detection from the real mount table of this machine."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.fsinfo import (
    Mount,
    filesystem_type,
    find_mount,
    is_network_filesystem,
    parse_mountinfo,
    read_mounts,
)

needs_proc = pytest.mark.skipif(
    not Path("/proc/self/mountinfo").exists(), reason="no /proc/self/mountinfo (not Linux?)"
)


def _findmnt_fstype(path: Path) -> str:
    findmnt = shutil.which("findmnt")
    if findmnt is None:
        pytest.skip("findmnt (util-linux) is not installed, so there is no oracle to compare with")
    out = subprocess.run(
        [findmnt, "--noheadings", "--output", "FSTYPE", "--target", str(path)],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


@needs_proc
def test_proc_is_proc() -> None:
    """/proc is reported as the 'proc' file system, which is not a network file system."""
    assert filesystem_type("/proc") == "proc"
    assert filesystem_type("/proc/self/status") == "proc"
    assert not is_network_filesystem("/proc")


@needs_proc
@pytest.mark.parametrize("which", ["root", "tmp"])
def test_matches_findmnt(which: str, tmp_path: Path) -> None:
    """The type found for / and for a temporary directory agrees with util-linux findmnt."""
    path = Path("/") if which == "root" else tmp_path
    assert filesystem_type(path) == _findmnt_fstype(path)


@needs_proc
def test_path_that_does_not_exist_yet(tmp_path: Path) -> None:
    """A state directory that is not created yet is judged by the mount that will hold it."""
    missing = tmp_path / "not" / "yet" / "there"
    assert filesystem_type(missing) == filesystem_type(tmp_path)


@needs_proc
def test_symlink_is_resolved(tmp_path: Path) -> None:
    """A symbolic link is judged by where it points, not by where the link itself lives."""
    link = tmp_path / "to-proc"
    link.symlink_to("/proc")
    assert filesystem_type(link) == "proc"


@needs_proc
def test_read_mounts_has_root() -> None:
    """The real mount table of this process is read and contains the root mount."""
    assert any(m.mount_point == "/" for m in read_mounts())


def test_longest_prefix_on_component_boundary() -> None:
    """The longest mount point wins, matched on whole path components, later mounts on top."""
    text = "\n".join(
        [
            "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
            "40 27 0:50 / /global/homes rw shared:5 - gpfs homes rw",
            "41 27 0:51 / /global/home rw - nfs4 srv:/home rw",
            "42 27 0:52 / /mnt/my\\040dir rw - fuse.sshfs me@host:/x rw",
            "43 27 0:53 / /scratch rw - ext4 /dev/vdb rw",
            "44 27 0:54 / /scratch rw - lustre 10.0.0.1@o2ib:/scratch rw",
        ]
    )
    mounts = parse_mountinfo(text)
    assert mounts[3] == Mount("/mnt/my dir", "fuse.sshfs", "me@host:/x")
    assert filesystem_type("/global/homes/a/alice", mounts) == "gpfs"
    assert filesystem_type("/global/home/alice", mounts) == "nfs4"
    assert filesystem_type("/global/homesick", mounts) == "ext4"
    assert filesystem_type("/scratch/run", mounts) == "lustre"
    assert is_network_filesystem("/mnt/my dir/state", mounts)
    assert not is_network_filesystem("/var/lib/orchestrator", mounts)


def test_empty_table_is_unknown() -> None:
    """Without a readable mount table the type is 'unknown' and not called a network one."""
    assert find_mount("/x", []) is None
    assert filesystem_type("/x", []) == "unknown"
    assert not is_network_filesystem("/x", [])
