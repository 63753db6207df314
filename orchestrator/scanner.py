"""Reads the jobs directory on a thread of its own, so that a slow, huge or hung manifest file
(an NFS read that never returns, a file written in chunks) never blocks the daemon's main
loop. The main loop asks for a scan (watcher event, periodic rescan) and receives the result
as an event; only this thread touches the parse cache.

A file that is invalid but changed less than ``settle_s`` ago (a slow ``scp`` still writing)
is not reported yet: the scan lists it as unsettled and this thread scans again once it has
been left alone for ``settle_s``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from orchestrator.errors import UnsafePermissionsError
from orchestrator.manifests.loader import DirectoryScan, check_permissions, scan_directory
from orchestrator.manifests.reading import JobsDirUnreadableError

log = structlog.get_logger("orchestrator.scanner")


@dataclass(frozen=True)
class ScanOutcome:
    """One look at the jobs directory: the scan, or why the directory was not read (then the
    daemon keeps what it runs: an empty scan would remove every job)."""

    scan: DirectoryScan | None
    dir_error: str | None = None
    dir_missing: bool = False


class Scanner:
    """Scans on request, on its own thread; results go to ``deliver`` (the event queue)."""

    def __init__(
        self,
        jobs_dir: Path,
        deliver: Callable[[ScanOutcome], None],
        settle_s: float = 2.0,
    ) -> None:
        self.jobs_dir = jobs_dir
        self.settle_s = settle_s
        self._deliver = deliver
        self._cache: dict[Path, Any] = {}
        self._lock = threading.Lock()  # one scan at a time: the cache is not shared
        self._wanted = threading.Event()
        self._stopping = threading.Event()
        self._owners: Mapping[str, Path] = {}
        self._settles_at: float | None = None  # epoch seconds of the next unsettled file
        self._thread: threading.Thread | None = None

    def set_owners(self, owners: Mapping[str, Path]) -> None:
        """Which file holds each job name now (it keeps the name against newcomers). Replaced
        whole, so the scanning thread always sees one consistent mapping."""
        self._owners = dict(owners)

    def scan_now(self) -> ScanOutcome:
        """Scan on the calling thread (start-up, and `reload`, whose caller waits for it)."""
        with self._lock:
            try:
                check_permissions(self.jobs_dir)
            except UnsafePermissionsError as exc:
                return ScanOutcome(None, dir_error=str(exc))
            except FileNotFoundError:
                return ScanOutcome(
                    None,
                    dir_error=f"{self.jobs_dir}: jobs directory does not exist",
                    dir_missing=True,
                )
            except OSError as exc:
                return ScanOutcome(None, dir_error=f"{self.jobs_dir}: cannot read: {exc}")
            try:
                scan = scan_directory(
                    self.jobs_dir,
                    cache=self._cache,
                    owners=self._owners,
                    settle_s=self.settle_s,
                )
            except (JobsDirUnreadableError, OSError) as exc:
                return ScanOutcome(None, dir_error=str(exc))
            self._settles_at = min(scan.unsettled.values()) if scan.unsettled else None
            return ScanOutcome(scan)

    def request(self) -> None:
        """Ask for a scan soon; requests made while one runs are coalesced into one more."""
        self._wanted.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="scanner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wanted.set()
        if self._thread is not None:
            # A scan stuck in a hung read is not waited for: the thread is a daemon thread.
            self._thread.join(timeout=2)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            timeout = None
            if self._settles_at is not None:
                timeout = max(0.0, self._settles_at - time.time()) + 0.05
            self._wanted.wait(timeout)
            if self._stopping.is_set():
                return
            self._wanted.clear()
            try:
                outcome = self.scan_now()
            except Exception:
                log.exception("scan_failed", jobs_dir=str(self.jobs_dir))
                time.sleep(1.0)  # no busy loop on a persistent failure
                continue
            self._deliver(outcome)
