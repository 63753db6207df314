"""One exception hierarchy for the whole project, rooted at OrchestratorError."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class OrchestratorError(Exception):
    """Base of every error the orchestrator raises on purpose."""


@dataclass(frozen=True)
class ManifestProblem:
    """One problem in one manifest file, positioned for `path:line:col: message` output.

    ``line`` and ``col`` are 1-based; ``field`` is the dotted field path (``spec.command.0``)
    or empty when the problem is with the whole document.
    """

    path: Path
    line: int
    col: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"{self.path}:{self.line}:{self.col}: {where}{self.message}"


class ManifestError(OrchestratorError):
    """A manifest could not be loaded; carries every problem found in the file."""

    def __init__(self, problems: list[ManifestProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    @property
    def path(self) -> Path:
        return self.problems[0].path


class UnsafePermissionsError(OrchestratorError):
    """A manifest or the jobs directory can be written by other users."""


class DurationError(OrchestratorError, ValueError):
    """A duration string such as '90s' or '6h' could not be parsed."""


class LeaseHeldError(OrchestratorError):
    """Another daemon holds the lease on this state directory."""


class StoreError(OrchestratorError):
    """The run store could not be opened or is of an unknown schema version."""


class StoreUnavailableError(StoreError):
    """The run store is there but cannot be read or written right now: another process holds
    its write lock beyond the busy timeout, the disk is full, or an I/O error. The same call may
    succeed later; the daemon retries with backoff and shows the problem in ``status``."""


class ExecutorError(OrchestratorError):
    """A run could not be started by its executor."""


class DaemonNotRunningError(OrchestratorError):
    """A command that needs the running daemon could not reach it."""


class ControlError(OrchestratorError):
    """The daemon answered a control request with an error."""
