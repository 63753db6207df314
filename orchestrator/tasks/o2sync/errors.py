"""The errors an O2Sync run ends with: each says what failed and what the user should do."""

from __future__ import annotations

from typing import Any

from orchestrator.errors import OrchestratorError


class O2SyncError(OrchestratorError):
    """A run that cannot go on. ``code`` is a stable word for scripts (``result.error``);
    ``details`` are merged into the run's result."""

    def __init__(self, message: str, code: str = "failed", **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


class LockHeldError(O2SyncError):
    """Another run holds the work dir (or the job's state)."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message, "locked", **details)
