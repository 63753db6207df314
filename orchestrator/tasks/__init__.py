"""What each job kind runs: a kind turns its manifest into an argv, an environment and a
working directory (``build_invocation``); the executor runs that, whatever the kind."""

from __future__ import annotations

from orchestrator.tasks.base import Invocation, build_invocation

__all__ = ["Invocation", "build_invocation"]
