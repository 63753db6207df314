"""The plan step of a run that is many tasks (``RunSpec.plan_argv``, a photometry batch): run
the kind's planner on the submitting host, read the array it names.

The planner runs in the run directory with the run's environment, within ``PLAN_TIMEOUT_S``;
its standard output and error go to ``plan.log`` there (its problems, such as the objects left
out, are the run's to read), and the last line of its standard output is the array: Slurm's
``--array`` syntax (``0-11%4``), or ``none`` when no task can run.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from orchestrator.executors.base import RunSpec
from orchestrator.executors.slurm.options import parse_array

PLAN_TIMEOUT_S = 600.0
PLAN_LOG = "plan.log"


class PlanError(Exception):
    """The plan step failed, or left nothing to submit; the message is the run's."""


def plan_array(spec: RunSpec, timeout_s: float = PLAN_TIMEOUT_S) -> str:
    """The array to submit for ``spec``; raises :class:`PlanError` saying why there is none."""
    assert spec.plan_argv is not None
    log_path = Path(spec.run_dir) / PLAN_LOG
    try:
        with log_path.open("ab") as log:
            proc = subprocess.run(
                spec.plan_argv,
                env=spec.env,
                cwd=spec.run_dir,
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                timeout=timeout_s,
                check=False,
            )
            log.write(proc.stdout)
    except subprocess.TimeoutExpired as exc:
        raise PlanError(f"planning the array took over {timeout_s:.0f} s; see {log_path}") from exc
    except OSError as exc:
        raise PlanError(f"cannot run the planner {spec.plan_argv[0]!r}: {exc}") from exc
    lines = [line.strip() for line in proc.stdout.decode(errors="replace").splitlines()]
    array = next((line for line in reversed(lines) if line), "")
    if proc.returncode != 0:
        raise PlanError(f"planning the array failed (exit {proc.returncode}); see {log_path}")
    if array == "none":
        raise PlanError(f"no task to run: the plan left every one out; see {log_path}")
    try:
        parse_array(array)
    except ValueError as exc:
        raise PlanError(f"the planner named no valid array ({array!r}: {exc})") from exc
    return array
