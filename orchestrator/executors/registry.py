"""The executors a daemon holds, by the name a manifest's ``executor`` gives: one line each.

Each entry names a ``from_settings(settings) -> Executor`` function, imported only when a
daemon starts (``python -m orchestrator.executors.shim`` must not load any of them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.executors.base import Executor
    from orchestrator.settings import Settings

FACTORIES: dict[str, str] = {
    "local": "orchestrator.executors.local:from_settings",
    "slurm": "orchestrator.executors.slurm.executor:from_settings",
}


def build(settings: Settings) -> dict[str, Executor]:
    """One executor of each registered name, configured from ``settings``."""
    executors: dict[str, Executor] = {}
    for name, target in FACTORIES.items():
        module, _, function = target.partition(":")
        executors[name] = getattr(importlib.import_module(module), function)(settings)
    return executors
