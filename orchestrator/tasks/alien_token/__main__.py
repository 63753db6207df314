"""``python -m orchestrator.tasks.alien_token``: one run of an AliEnToken job (see ``task``)."""

from __future__ import annotations

import sys

from pydantic import ValidationError

from orchestrator.manifests.models import AliEnTokenManifest
from orchestrator.tasks.alien_token.task import EXIT_UNUSABLE, run
from orchestrator.tasks.python_task import read_manifest, write_result


def main() -> int:
    try:
        manifest = AliEnTokenManifest.model_validate(read_manifest())
    except (OSError, ValueError, ValidationError) as exc:
        print(f"ERROR: the manifest handed to this task is unusable: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    code, result = run(manifest)
    write_result(result)
    return code


if __name__ == "__main__":
    sys.exit(main())
