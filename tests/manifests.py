"""Manifests and look-ups the daemon tests share (integration, faults, unit)."""

from __future__ import annotations

from typing import Any

from tests.conftest import DaemonHarness

JOB = """\
apiVersion: orchestrator/v1
kind: Command
name: {name}
{extra}
spec:
  command: {command}
"""


# A job that runs every two seconds and says which version of its manifest ran.
EVERY_2S = """\
apiVersion: orchestrator/v1
kind: Command
name: ticker
schedule: {{every: 2s}}
spec:
  command: [bash, -c, "echo {word} $ORCH_RUN_ID"]
"""


def job(name: str, command: str, extra: str = "") -> str:
    """A Command manifest: ``command`` as YAML (a flow list), ``extra`` more top-level lines."""
    return JOB.format(name=name, command=command, extra=extra)


def succeeded(h: DaemonHarness, job: str) -> list[dict[str, Any]]:
    """The job's runs that succeeded, newest first."""
    return [r for r in h.history(job) if r["state"] == "succeeded"]
