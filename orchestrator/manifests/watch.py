"""Watch the jobs directory and call back, debounced, when manifests may have changed.

inotify (watchdog's Observer) where it works; the polling observer on network file systems
(inotify does not see writes made on other nodes of GPFS/NFS/Lustre) or when inotify is
unavailable or out of watches. Editors produce bursts (atomic rename, swap and backup files,
several events per save): events are coalesced for ``debounce_s`` and the daemon re-reads the
directory, so a half-written file is simply re-read after the next event or rescan.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from orchestrator.fsinfo import is_network_filesystem
from orchestrator.manifests.scan import is_manifest_file

log = structlog.get_logger("orchestrator.watch")


class _Handler(FileSystemEventHandler):
    def __init__(self, jobs_dir: Path, poke: Callable[[], None]) -> None:
        self._jobs_dir = jobs_dir
        self._poke = poke

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        paths = [event.src_path, getattr(event, "dest_path", "")]
        for raw in paths:
            if not raw:
                continue
            path = Path(str(raw if isinstance(raw, str) else raw.decode()))
            if path == self._jobs_dir or is_manifest_file(path):
                self._poke()
                return


class DirectoryWatcher:
    """Calls ``on_change()`` at most once per quiet period of ``debounce_s`` after events."""

    def __init__(
        self,
        jobs_dir: Path,
        on_change: Callable[[], None],
        debounce_s: float = 0.05,
        force_polling: bool = False,
        polling_interval_s: float = 2.0,
    ) -> None:
        self.jobs_dir = jobs_dir
        self._on_change = on_change
        self._debounce_s = debounce_s
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._force_polling = force_polling
        self._polling_interval_s = polling_interval_s
        self._observer: object | None = None
        self.mode = "stopped"

    def start(self) -> str:
        """Start watching; returns the mode used: 'inotify' or 'polling (<reason>)'."""
        handler = _Handler(self.jobs_dir, self._poke)
        reason = ""
        if self._force_polling:
            reason = "asked for"
        elif is_network_filesystem(self.jobs_dir):
            reason = "network file system"
        if not reason:
            observer = Observer()
            try:
                observer.schedule(handler, str(self.jobs_dir), recursive=False)
                observer.start()
            except OSError as exc:  # ENOSPC (out of watches), EMFILE, no inotify
                reason = f"inotify unavailable: {exc}"
                try:
                    observer.stop()
                except Exception:
                    log.debug("observer_stop_failed")
            else:
                self._observer = observer
                self.mode = "inotify"
                return self.mode
        polling = PollingObserver(timeout=self._polling_interval_s)
        polling.schedule(handler, str(self.jobs_dir), recursive=False)
        polling.start()
        self._observer = polling
        self.mode = f"polling ({reason})"
        return self.mode

    def stop(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
        observer = self._observer
        if observer is not None:
            observer.stop()  # type: ignore[attr-defined]
            observer.join(timeout=2)  # type: ignore[attr-defined]
        self.mode = "stopped"

    def _poke(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self._debounce_s, self._on_change)
            self._timer.daemon = True
            self._timer.start()
