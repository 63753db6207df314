"""The pointer the user's jobs read to find the promoted tag: a symlink, an env file, or both.

Both are replaced atomically (a new symlink or file under a temporary name, then rename), so a
job that starts while the pointer changes reads the old tag or the new one, never a mixture.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from orchestrator import atomic
from orchestrator.tasks.o2sync.errors import O2SyncError
from orchestrator.tasks.o2sync.spec import Pointer
from orchestrator.tasks.o2sync.state import atomic_write_text, expand_path, now_iso
from orchestrator.tasks.o2sync.tags import payload_dir


def variable_prefix(package: str) -> str:
    """``O2Physics`` -> ``O2PHYSICS``: the prefix of the env file's variables."""
    return re.sub(r"[^A-Za-z0-9]", "_", package).upper()


def alienv_version(package: str, tag: str) -> str:
    return f"VO_ALICE@{package}::{tag}"


def enter_line(cvmfs_root: Path, package: str, tag: str) -> str:
    return f"{cvmfs_root}/bin/alienv enter {alienv_version(package, tag)}"


def env_file_text(cvmfs_root: Path, package: str, tag: str, job: str) -> str:
    prefix = variable_prefix(package)
    lines = [
        f"# Written by orchestrator O2Sync job {job} at {now_iso()}; do not edit by hand:",
        f"# the next run replaces it. Switch tags with: orchestrator o2 rollback {job} [TAG]",
        f"{prefix}_TAG={shlex.quote(tag)}",
        f"{prefix}_VERSION={shlex.quote(alienv_version(package, tag))}",
        f"{prefix}_ENTER={shlex.quote(enter_line(cvmfs_root, package, tag))}",
    ]
    return "\n".join(lines) + "\n"


class PointerFiles:
    """The configured pointer paths of one job, expanded."""

    def __init__(self, pointer: Pointer, cvmfs_root: Path, arch: str, package: str) -> None:
        self.symlink = expand_path(pointer.symlink, "pointer.symlink") if pointer.symlink else None
        self.env_file = (
            expand_path(pointer.env_file, "pointer.env_file") if pointer.env_file else None
        )
        self.cvmfs_root = cvmfs_root
        self.arch = arch
        self.package = package

    def check(self) -> None:
        """Refuse, before anything is probed, a pointer path that cannot be replaced."""
        if self.symlink is not None and self.symlink.exists() and not self.symlink.is_symlink():
            raise O2SyncError(
                f"pointer.symlink {self.symlink} exists and is not a symlink; move it away "
                "(the job replaces only a symlink of its own)",
                "bad_pointer",
            )
        if self.env_file is not None and (
            self.env_file.is_symlink() or (self.env_file.exists() and not self.env_file.is_file())
        ):
            raise O2SyncError(
                f"pointer.env_file {self.env_file} exists and is not a regular file; move it away",
                "bad_pointer",
            )

    def current(self) -> str | None:
        """The tag the pointer names now (for a job without state yet), if it names one."""
        if self.symlink is not None and self.symlink.is_symlink():
            return Path(os.readlink(self.symlink)).name or None
        if self.env_file is not None and self.env_file.is_file():
            prefix = variable_prefix(self.package) + "_TAG="
            for line in self.env_file.read_text().splitlines():
                if line.startswith(prefix):
                    values = shlex.split(line[len(prefix) :])
                    return values[0] if values else None
        return None

    def missing(self) -> bool:
        return (self.symlink is not None and not self.symlink.is_symlink()) or (
            self.env_file is not None and not self.env_file.is_file()
        )

    def write(self, tag: str, job: str) -> list[str]:
        """Point at ``tag``; returns the paths written."""
        written: list[str] = []
        try:
            if self.symlink is not None:
                target = payload_dir(self.cvmfs_root, self.arch, self.package, tag)
                self.symlink.parent.mkdir(parents=True, exist_ok=True)
                atomic.replace_symlink(self.symlink, target)
                written.append(str(self.symlink))
            if self.env_file is not None:
                atomic_write_text(
                    self.env_file, env_file_text(self.cvmfs_root, self.package, tag, job)
                )
                written.append(str(self.env_file))
        except OSError as exc:
            raise O2SyncError(
                f"cannot update the pointer ({exc.filename or ''}: {exc.strerror or exc}); "
                f"updated so far: {', '.join(written) or 'nothing'}. Fix the path or its "
                "permissions; the next run writes it again",
                "bad_pointer",
            ) from exc
        return written
