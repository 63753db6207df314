"""``python -m orchestrator.tasks.photometry_batch [--plan]``: one run of a PhotometryBatch job
(or its plan only: see ``task``)."""

from __future__ import annotations

import sys

from orchestrator.tasks.photometry_batch.spec import PhotometryBatchManifest
from orchestrator.tasks.photometry_batch.task import EXIT_FAILED, EXIT_UNUSABLE, plan_only, run
from orchestrator.tasks.python_task import main_of, read_manifest


def _plan() -> int:
    try:
        manifest = PhotometryBatchManifest.model_validate(read_manifest())
    except (OSError, ValueError) as exc:
        print(f"ERROR: the manifest handed to this task is unusable: {exc}", file=sys.stderr)
        print("none", flush=True)
        return EXIT_UNUSABLE
    code, array = plan_only(manifest)
    print(array, flush=True)
    return code


if __name__ == "__main__":
    if sys.argv[1:] == ["--plan"]:
        sys.exit(_plan())
    sys.exit(main_of(PhotometryBatchManifest, run, "PhotometryBatch", EXIT_FAILED, EXIT_UNUSABLE))
