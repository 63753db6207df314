"""``python -m orchestrator.tasks.alien_token``: one run of an AliEnToken job (see ``task``)."""

from __future__ import annotations

import sys
import traceback

from pydantic import ValidationError

from orchestrator.tasks.alien_token.spec import AliEnTokenManifest
from orchestrator.tasks.alien_token.task import EXIT_FAILED, EXIT_UNUSABLE, run
from orchestrator.tasks.python_task import read_manifest, write_result


def main() -> int:
    try:
        manifest = AliEnTokenManifest.model_validate(read_manifest())
    except (OSError, ValueError, ValidationError) as exc:
        print(f"ERROR: the manifest handed to this task is unusable: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        code, result = run(manifest)
    except Exception as exc:
        # A bug or an environment the task did not foresee: the traceback goes to the run's
        # log, and the result says the run says nothing about the token.
        traceback.print_exc()
        summary = f"internal error in the AliEnToken task: {type(exc).__name__}: {exc}"
        print(f"ERROR: {summary}; the token was not checked to the end", file=sys.stderr)
        write_result({"summary": summary, "errors": [summary]})
        return EXIT_FAILED
    write_result(result)
    return code


if __name__ == "__main__":
    sys.exit(main())
