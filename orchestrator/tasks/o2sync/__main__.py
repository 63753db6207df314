"""``python -m orchestrator.tasks.o2sync``: one O2Sync run, started by the daemon.

Reads the manifest the daemon handed over, re-validates it, does the mode's work, writes the
result (``python_task.write_result``) and exits 0, or 1 with a message on stderr that says what
failed and what to do. The result is written in both cases: ``error`` holds a stable word
(``verification_failed``, ``rebase_conflict``, ``out_of_memory``, ``locked``, ``low_disk``, ...).
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

from pydantic import ValidationError

from orchestrator.tasks.o2sync import proc
from orchestrator.tasks.o2sync.context import Context
from orchestrator.tasks.o2sync.errors import O2SyncError
from orchestrator.tasks.o2sync.spec import O2SyncManifest
from orchestrator.tasks.o2sync.state import default_state_dir, expand_path
from orchestrator.tasks.python_task import read_manifest, write_result


def _fail(result: dict[str, Any], message: str, code: int = 1) -> int:
    result.setdefault("summary", message.splitlines()[0][:300])
    write_result(result)
    print(f"o2sync: FAILED: {message}", file=sys.stderr, flush=True)
    return code


def main() -> int:
    proc.install_signal_handlers()
    try:
        manifest = O2SyncManifest.model_validate(read_manifest())
    except ValidationError as exc:
        return _fail(
            {"error": "bad_manifest", "summary": f"the manifest does not validate: {exc}"[:300]},
            f"the manifest does not validate:\n{exc}",
            2,
        )
    spec = manifest.spec
    result: dict[str, Any] = {"mode": spec.mode, "package": spec.package}
    try:
        state_dir = (
            expand_path(spec.state_dir, "state_dir")
            if spec.state_dir
            else default_state_dir(manifest.name)
        )
        ctx = Context(manifest.name, os.environ.get("ORCH_RUN_ID"), state_dir)
        if spec.mode == "cvmfs":
            from orchestrator.tasks.o2sync.cvmfs import sync_cvmfs

            result = sync_cvmfs(spec, ctx)
        else:
            from orchestrator.tasks.o2sync.source import sync_source

            result = sync_source(spec, ctx)
    except proc.Terminated as exc:
        result.update(exc.details, error=exc.code)
        return _fail(result, str(exc), 128 + exc.signum)
    except O2SyncError as exc:
        result.update(exc.details, error=exc.code)
        return _fail(result, str(exc))
    except Exception as exc:  # a bug: still leave a result and a clear line, then the trace
        traceback.print_exc()
        result["error"] = "internal"
        return _fail(result, f"internal error {type(exc).__name__}: {exc} (a bug; report it)")
    result["error"] = None
    write_result(result)
    print(f"o2sync: {result.get('summary', 'done')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
