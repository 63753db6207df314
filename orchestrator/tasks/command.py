"""kind: Command — run an argv list, optionally inside a container."""

from __future__ import annotations

import os

from orchestrator.manifests.models import CommandManifest


def command_invocation(manifest: CommandManifest) -> tuple[list[str], dict[str, str], str | None]:
    """argv, the manifest's environment, and the working directory (``~`` and ``$VARS``
    expanded, since manifests are shared between users and hosts)."""
    spec = manifest.spec
    workdir = os.path.expandvars(os.path.expanduser(spec.workdir)) if spec.workdir else None
    return list(spec.command), dict(spec.env), workdir
