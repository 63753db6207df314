"""The AliEnToken manifest's ``spec`` (placeholder: to be completed with the task)."""

from __future__ import annotations

from orchestrator.manifests.fields import Duration, StrictModel


class AliEnTokenSpec(StrictModel):
    renew_before: Duration = 86400.0
