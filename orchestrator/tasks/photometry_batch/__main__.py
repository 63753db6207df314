"""``python -m orchestrator.tasks.photometry_batch``: one run of a PhotometryBatch job."""

from __future__ import annotations

import sys

from orchestrator.tasks.photometry_batch.spec import PhotometryBatchManifest
from orchestrator.tasks.photometry_batch.task import EXIT_FAILED, EXIT_UNUSABLE, run
from orchestrator.tasks.python_task import main_of

if __name__ == "__main__":
    sys.exit(main_of(PhotometryBatchManifest, run, "PhotometryBatch", EXIT_FAILED, EXIT_UNUSABLE))
