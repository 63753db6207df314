"""kind: Command — run an argv list, optionally inside a container."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field

from orchestrator.kinds import TaskCommand
from orchestrator.manifests.fields import Argv, Container, EnvMap, StrictModel
from orchestrator.manifests.models import ManifestBase


class CommandSpec(StrictModel):
    command: Argv
    env: EnvMap = Field(default_factory=dict)
    workdir: str | None = None
    container: Container | None = None


class CommandManifest(ManifestBase):
    kind: Literal["Command"]
    spec: CommandSpec


def command_invocation(manifest: CommandManifest) -> TaskCommand:
    """argv, the manifest's environment, the working directory (``~`` and ``$VARS``
    expanded, since manifests are shared between users and hosts) and the container."""
    spec = manifest.spec
    workdir = os.path.expandvars(os.path.expanduser(spec.workdir)) if spec.workdir else None
    return TaskCommand(list(spec.command), dict(spec.env), workdir, spec.container)
