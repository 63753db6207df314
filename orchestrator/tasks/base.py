"""The one entry point from a manifest to what an executor runs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import kinds
from orchestrator.containers import render_command
from orchestrator.executors.base import RunSpec
from orchestrator.kinds import TaskCommand
from orchestrator.manifests.models import Manifest
from orchestrator.tasks.python_task import TASK_PROGRESS_FILE, TASK_RESULT_FILE, task_invocation


@dataclass(frozen=True)
class Invocation:
    """An argv (never a shell string), the full environment, and the working directory."""

    argv: list[str]
    env: dict[str, str]
    workdir: str | None
    env_overrides: dict[str, str] = field(default_factory=dict)
    plan_argv: list[str] | None = None  # the kind's array planner (executors.base.RunSpec)


def build_invocation(
    manifest: Manifest,
    run_id: str,
    base_env: dict[str, str] | None = None,
    run_dir: Path | None = None,
    state_dir: Path | None = None,
) -> Invocation:
    """Render a manifest into an Invocation. The environment is the daemon's, then the
    manifest's ``env``, then ORCH_JOB / ORCH_RUN_ID so that a run can find its own record.
    A Python task kind gets its manifest and result paths in ``run_dir``. What a kind runs
    comes from its entry in :mod:`orchestrator.kinds`."""
    base = dict(os.environ if base_env is None else base_env)
    env = dict(base)
    kind = kinds.get(manifest.kind)
    if kind.command is not None:
        command: TaskCommand = kinds.load(kind.command)(manifest)
    else:
        assert kind.task is not None
        if run_dir is None:
            raise ValueError(f"kind {manifest.kind} needs a run directory")
        argv, task_env = task_invocation(
            kind.task, manifest.model_dump_json(exclude={"notify"}), run_dir
        )
        if state_dir is not None:
            task_env["ORCH_STATE_DIR"] = str(state_dir)
        command = TaskCommand(argv, task_env)
    argv, spec_env, workdir, container = (
        command.argv,
        command.env,
        command.workdir,
        command.container,
    )
    env.update(spec_env)
    if run_dir is not None:
        # Any job may leave a structured result (a JSON object) here; the daemon stores it
        # with the run (status --json, history --json). Python task kinds always do.
        env.setdefault("ORCH_TASK_RESULT", str(run_dir / TASK_RESULT_FILE))
        # ... and a running job may say how far it is (a JSON object, replaced atomically);
        # status --json shows it under the job's "progress"
        env.setdefault("ORCH_TASK_PROGRESS", str(run_dir / TASK_PROGRESS_FILE))
    env["ORCH_JOB"] = manifest.name
    env["ORCH_RUN_ID"] = run_id
    argv, env = render_command(container, argv, env, workdir)
    if container is not None and container.runtime != "none":
        # The runtime was told the workdir (a path inside the container); on the host the
        # run starts in its own run directory.
        workdir = None
    overrides = {k: v for k, v in env.items() if base.get(k) != v}
    plan_argv = [*argv, "--plan"] if kind.plan and container is None else None
    return Invocation(
        argv=argv, env=env, workdir=workdir, env_overrides=overrides, plan_argv=plan_argv
    )


def run_spec(
    manifest: Manifest,
    invocation: Invocation,
    run_id: str,
    run_dir: Path,
    log_path: Path,
    attempt: int = 1,
    array: str | None = None,
) -> RunSpec:
    """What an executor gets for one run of ``manifest`` (the daemon's dispatch, and
    `orchestrator render` without starting anything)."""
    return RunSpec(
        run_id=run_id,
        argv=invocation.argv,
        env=invocation.env,
        workdir=invocation.workdir,
        timeout_s=manifest.policy.timeout,
        kill_grace_s=manifest.policy.kill_grace,
        run_dir=run_dir,
        log_path=log_path,
        job=manifest.name,
        attempt=attempt,
        options=manifest.executor_options,
        array=array,
        env_overrides=invocation.env_overrides,
        plan_argv=invocation.plan_argv,
    )
