"""The O2Sync manifest's ``spec`` (placeholder: to be completed with the task)."""

from __future__ import annotations

from typing import Literal

from orchestrator.manifests.fields import StrictModel


class O2SyncSpec(StrictModel):
    mode: Literal["cvmfs", "source"]
