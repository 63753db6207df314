"""Errors raised by the difference-image-analysis core.

They subclass :class:`orchestrator.errors.OrchestratorError` so that a photometry task can catch
one root; ``orchestrator.errors`` imports nothing heavy, so child processes stay light.
"""

from __future__ import annotations

from orchestrator.errors import OrchestratorError


class DiaError(OrchestratorError):
    """Base of every error the DIA core raises on purpose."""


class DiaInputError(DiaError, ValueError):
    """An input array or option is invalid (shape, dtype, range); the message says what is valid."""


class DiaBackendError(DiaError):
    """The requested backend cannot run here (for example ``gpu`` without CuPy or a device)."""


class DiaFitError(DiaError):
    """The kernel fit could not be solved (too few good pixels, singular normal matrix)."""
