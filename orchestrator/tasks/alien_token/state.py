"""What the task remembers between runs: which hosts hold which token.

Kept in ``$ORCH_STATE_DIR/alien_token/<job>/hosts.json`` (written atomically). A host is
copied to again when its last copy failed, when it holds an older token, or when its copy is
older than ``recopy_after``. Tokens are named by the SHA-256 of the certificate (public data);
no token contents are kept here. A lock file keeps two runs of one job from interleaving.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.tasks.alien_token.local_copy import atomic_write

HOSTS_FILE = "hosts.json"
LOCK_FILE = "lock"


class StateBusyError(Exception):
    """Another run of the same job holds the lock."""


@dataclass
class HostState:
    ok: bool = False
    error: str = ""
    fingerprint: str = ""  # the certificate this host received last (when ok)
    copied_at: str = ""  # ISO 8601 UTC of the last successful copy
    attempted_at: str = ""
    failures: int = 0  # consecutive failed attempts

    def due(self, fingerprint: str, now: datetime, recopy_after_s: float) -> bool:
        if not self.ok or self.fingerprint != fingerprint or not self.copied_at:
            return True
        age_s = (now - datetime.fromisoformat(self.copied_at)).total_seconds()
        return age_s >= recopy_after_s


def state_dir_for(job: str) -> Path | None:
    root = os.environ.get("ORCH_STATE_DIR")
    return Path(root) / "alien_token" / job if root else None


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(directory / LOCK_FILE, "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise StateBusyError(str(directory / LOCK_FILE)) from exc
        yield


def load_hosts(directory: Path | None) -> dict[str, HostState]:
    if directory is None:
        return {}
    try:
        raw: Any = json.loads((directory / HOSTS_FILE).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        # A damaged state file costs one extra copy to every host, nothing more.
        return {}
    out: dict[str, HostState] = {}
    if isinstance(raw, dict):
        for host, entry in raw.get("hosts", {}).items():
            if isinstance(entry, dict):
                known = {k: v for k, v in entry.items() if k in HostState.__dataclass_fields__}
                out[host] = HostState(**known)
    return out


def save_hosts(directory: Path | None, hosts: dict[str, HostState]) -> None:
    if directory is None:
        return
    data = {"hosts": {host: asdict(entry) for host, entry in sorted(hosts.items())}}
    atomic_write(directory / HOSTS_FILE, (json.dumps(data, indent=2) + "\n").encode())
