"""Job kinds implemented in Python (O2Sync, AliEnToken, ...) run as child processes.

The daemon never imports what a task does; it starts ``python -m <module>`` like any command,
so a task that crashes or hangs is a failed or timed-out run, never a stalled daemon. The
contract between the daemon and a task process:

- ``ORCH_TASK_MANIFEST``: path of ``manifest.json`` in the run directory (the validated
  manifest, as ``model_dump(mode="json")``); a task re-validates it with the kind's model.
- ``ORCH_TASK_RESULT``: path where the task writes its structured result, a JSON object,
  atomically (``write_result``). The daemon stores it as the run's ``result`` (shown by
  ``status --json`` and ``history --json``); a ``summary`` string becomes the run's message.
- ``ORCH_STATE_DIR``, ``ORCH_JOB``, ``ORCH_RUN_ID``: where the daemon keeps state, and who runs.
- Exit status 0 is success; anything else is failure, explained on stderr (the run's log).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator import atomic

TASK_RESULT_FILE = "task-result.json"
TASK_PROGRESS_FILE = "task-progress.json"  # what a running task says of its progress
MANIFEST_FILE = "manifest.json"


def task_invocation(
    module: str, manifest_json: str, run_dir: Path
) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment for a Python task; writes the manifest into the run dir."""
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = run_dir / MANIFEST_FILE
    manifest_path.write_text(manifest_json)
    env = {
        "ORCH_TASK_MANIFEST": str(manifest_path),
        "ORCH_TASK_RESULT": str(run_dir / TASK_RESULT_FILE),
    }
    # -E would drop PYTHONPATH; the task must import this very package, so keep the
    # interpreter the daemon runs with and let the environment through.
    return [sys.executable, "-m", module], env


def read_manifest() -> dict[str, Any]:
    """For the task process: the manifest the daemon handed over."""
    path = os.environ.get("ORCH_TASK_MANIFEST")
    if not path:
        raise SystemExit("ORCH_TASK_MANIFEST is not set: tasks are started by the daemon")
    return dict(json.loads(Path(path).read_text()))


def write_result(result: dict[str, Any]) -> None:
    """For the task process: write the structured result atomically (temp file + rename)."""
    path = os.environ.get("ORCH_TASK_RESULT")
    if not path:
        return
    atomic.write_json(Path(path), result, 0o600, indent=2)


def read_task_result(run_dir: Path) -> dict[str, Any] | None:
    """For the daemon: the result a task left in its run directory, if any."""
    try:
        data = json.loads((run_dir / TASK_RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def main_of(
    model: Any,
    run: Callable[[Any], tuple[int, dict[str, Any]]],
    kind: str,
    exit_failed: int,
    exit_unusable: int,
) -> int:
    """A Python task's ``main``: re-validate the manifest with the kind's ``model``, ``run``
    it, write its result, return its exit status. An unusable manifest exits
    ``exit_unusable``; an exception the task did not foresee (a bug, an environment nobody
    planned for) prints its traceback to the run's log, writes a result that says so, and
    exits ``exit_failed``."""
    import traceback

    try:
        manifest = model.model_validate(read_manifest())
    except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        print(f"ERROR: the manifest handed to this task is unusable: {exc}", file=sys.stderr)
        return exit_unusable
    try:
        code, result = run(manifest)
    except Exception as exc:
        traceback.print_exc()
        summary = f"internal error in the {kind} task: {type(exc).__name__}: {exc}"
        print(f"ERROR: {summary}", file=sys.stderr)
        write_result({"summary": summary, "errors": [summary]})
        return exit_failed
    if result:  # an empty result leaves the run's result file to another process of the run
        write_result(result)
    return code
