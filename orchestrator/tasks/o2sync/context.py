"""What both modes share: who runs, where progress goes, the commands' environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from orchestrator.tasks.o2sync.spec import O2SyncSpec


@dataclass(frozen=True)
class Context:
    """Who runs: the job's name, the run id (None outside the daemon), the state directory."""

    job: str
    run_id: str | None
    state_dir: Path


def say(message: str) -> None:
    """A progress line in the run's log (the task's stdout)."""
    print(message, flush=True)


def command_env(spec: O2SyncSpec, **extra: str) -> dict[str, str]:
    """The task's environment, then ``spec.env``, then ``extra``."""
    env = dict(os.environ)
    env.update(spec.env)
    env.update(extra)
    return env
