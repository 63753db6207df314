"""The executors, by the name a manifest's ``executor`` gives: one line in each table.

- ``FACTORIES``: a ``from_settings(settings) -> Executor`` function, imported only when a daemon
  starts (``python -m orchestrator.executors.shim`` must not load any of them).
- ``OPTION_MODELS``: for an executor a manifest selects with a mapping, ``executor: {name:
  {...}}``, the Pydantic model of that mapping (``name`` and ``options`` properties; optional
  ``PATTERN_HINTS``, keyed by the end of a field's path, for values that miss a pattern). The
  manifest models build their ``executor`` union from it. ``local`` takes no options.
- ``ENVIRONMENT``: the ``ORCH_*`` variables each executor reads (listed by ``--help``).
- ``CLUSTER_CHECKS``: ``validate --cluster``'s check of the manifests that use the executor
  against the system it reaches (names of partitions, accounts), a
  ``check(loaded) -> ClusterCheck`` function.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.executors.base import Executor
    from orchestrator.settings import Settings

FACTORIES: dict[str, str] = {
    "local": "orchestrator.executors.local:from_settings",
    "slurm": "orchestrator.executors.slurm.executor:from_settings",
}
OPTION_MODELS: dict[str, str] = {
    "slurm": "orchestrator.executors.slurm.options:SlurmExecutor",
}
ENVIRONMENT: dict[str, tuple[str, ...]] = {
    "local": ("ORCH_MAX_LOCAL_RUNS",),
    "slurm": (
        "ORCH_SLURM_SPOOL_DIR",
        "ORCH_SLURM_POLL_MIN_S",
        "ORCH_SLURM_POLL_MAX_S",
        "ORCH_SLURM_LOST_GRACE_S",
        "ORCH_SLURM_CMD_TIMEOUT_S",
    ),
}
CLUSTER_CHECKS: dict[str, str] = {
    "slurm": "orchestrator.executors.slurm.clustercheck:check_against_cluster",
}


def resolve(target: str) -> Any:
    """The object a ``module:name`` entry names (the module imported now)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def option_models() -> dict[str, Any]:
    """Executor name -> the model of its ``executor: {name: {...}}`` mapping."""
    return {name: resolve(target) for name, target in OPTION_MODELS.items()}


def build(settings: Settings) -> dict[str, Executor]:
    """One executor of each registered name, configured from ``settings``."""
    executors: dict[str, Executor] = {}
    for name, target in FACTORIES.items():
        executors[name] = resolve(target)(settings)
    return executors
