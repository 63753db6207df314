"""A toy job kind for tests/unit/test_kind_registry.py: a manifest model and a Python task.

Run as ``python -m tests.unit.toy_kind`` by the daemon's task runner, it writes its message
into the run's result, as any Python task kind does (``orchestrator.tasks.python_task``).
"""

from __future__ import annotations

from typing import Literal

from orchestrator.manifests.fields import StrictModel
from orchestrator.manifests.models import ManifestBase


class ToySpec(StrictModel):
    message: str
    times: int = 1


class ToyManifest(ManifestBase):
    kind: Literal["Toy"]
    spec: ToySpec


def main() -> int:
    from orchestrator.tasks.python_task import read_manifest, write_result

    manifest = ToyManifest.model_validate(read_manifest())
    write_result({"summary": " ".join([manifest.spec.message] * manifest.spec.times)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
