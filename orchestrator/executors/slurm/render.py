"""The batch script of a run: one pure function, so that what ran can be read and resubmitted.

Every option the orchestrator passes lives in ``#SBATCH`` lines of the script (no option on the
sbatch command line but ``--parsable``), so ``sbatch <run_dir>/job.sbatch`` by hand submits the
same job. Values that reach the shell part are quoted with shlex.quote; values in ``#SBATCH``
lines were validated to hold no whitespace (the manifest models refuse it), since Slurm reads
those lines itself, not through a shell.

The script writes two kinds of marker files into the run directory, which must therefore be on a
file system that the compute nodes share with the daemon (``ORCH_SLURM_SPOOL_DIR``):
``started.<task>`` (the Slurm job id, the array's for an array task, written first) lets the
daemon find a job whose sbatch answer it never got, even after the job left squeue;
``exit.<task>`` (the exit code, written last) gives the exit code when accounting (sacct) is
disabled.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.executors.slurm.options import SlurmOptions

SCRIPT_NAME = "job.sbatch"
FALLBACK_SCRIPT_NAME = "job-fallback.sbatch"
FALLBACK_SUFFIX = "-fallback"
NO_TASK = "none"


def job_tag(run_id: str, submission: int = 0, suffix: str = "") -> str:
    """The unique --job-name of a run's submission (resubmissions after NODE_FAIL get -r<n>;
    the fallback job of a stalled queue ``-fallback``)."""
    return f"orch-{run_id}" + (f"-r{submission}" if submission else "") + suffix


def format_time_limit(seconds: float) -> str:
    """Slurm's ``D-HH:MM:SS``, rounded up to whole minutes (Slurm's granularity)."""
    minutes = -(-int(seconds) // 60)
    days, rest = divmod(minutes * 60, 86400)
    hours, rest = divmod(rest, 3600)
    mins = rest // 60
    return f"{days}-{hours:02d}:{mins:02d}:00"


@dataclass(frozen=True)
class BatchRequest:
    """What one submission needs; ``array`` overrides the manifest's (retry of failed tasks)."""

    run_id: str
    job: str
    attempt: int
    argv: list[str]
    env: dict[str, str]
    workdir: str | None
    run_dir: Path
    options: SlurmOptions
    array: str | None = None
    submission: int = 0
    extra_env_names: list[str] = field(default_factory=list)
    tag_suffix: str = ""  # FALLBACK_SUFFIX for the fallback job
    script_name: str = SCRIPT_NAME


def sbatch_options(req: BatchRequest) -> list[str]:
    """The ``--option=value`` list for the ``#SBATCH`` header, in a fixed order."""
    o = req.options
    array = req.array if req.array is not None else o.array
    out_name = "output-%a.log" if array else "output.log"
    opts = [
        f"--job-name={job_tag(req.run_id, req.submission, req.tag_suffix)}",
        f"--comment=orchestrator-run={req.run_id}",
        f"--output={o.output or req.run_dir / out_name}",
        "--open-mode=append",
    ]
    if o.error:
        opts.append(f"--error={o.error}")
    if array:
        opts.append(f"--array={array}")
    for flag, value in (
        ("account", o.account),
        ("partition", o.partition),
        ("qos", o.qos),
        ("constraint", o.constraint),
        ("time", format_time_limit(o.time) if o.time else None),
        ("nodes", o.nodes),
        ("ntasks", o.ntasks),
        ("cpus-per-task", o.cpus_per_task),
        ("gpus-per-task", o.gpus_per_task),
        ("mem", o.mem),
        ("signal", o.signal),
    ):
        if value is not None:
            opts.append(f"--{flag}={value}")
    if o.requeue is not None:
        opts.append("--requeue" if o.requeue else "--no-requeue")
    opts.extend(o.extra_args)
    return opts


# The script's own shell variables. The prefix keeps them apart from anything a program reads,
# and they are unset and set at the top, never tested as inherited: sbatch exports the submitting
# daemon's environment, so a daemon started with `rc=0` exported once made every job skip its
# command and report success (issue 8).
_RC = "__orch_rc"
_RUN_DIR = "__orch_run_dir"
_TASK = "__orch_task"


def render_batch_script(req: BatchRequest, env_overrides: dict[str, str]) -> str:
    """The whole batch script. ``env_overrides`` are the variables the manifest sets (the rest
    of the environment is the submitting daemon's, which sbatch exports by default).

    The manifest's variables are exported only in the subshell that runs the command, so that no
    name in a manifest's ``env`` (``rc``, ``PATH``, ``IFS``, even ``__orch_rc``) can change the
    script's own steps: the markers and the exit code it reports.
    """
    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH {opt}" for opt in sbatch_options(req)]
    run_dir = shlex.quote(str(req.run_dir))
    lines += [
        "#",
        f"# Run {req.run_id} of job {req.job!r} (attempt {req.attempt}), rendered by orchestrator.",
        f"# To resubmit by hand: sbatch {shlex.quote(str(req.run_dir / req.script_name))}",
    ]
    if req.tag_suffix == FALLBACK_SUFFIX:
        lines.append(
            "# The fallback job of a stalled queue: the daemon submits it with --array=<the "
            "moved tasks>, which overrides the array above."
        )
    lines += [
        "",
        "set -u",
        f"unset {_RC} {_RUN_DIR} {_TASK}",
        f"{_RUN_DIR}={run_dir}",
        f'{_TASK}="${{SLURM_ARRAY_TASK_ID:-{NO_TASK}}}"',
        "# Written first: lets the orchestrator find this job even if it never got the id.",
        f"printf '%s\\n' \"${{SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}}\" "
        f'> "${_RUN_DIR}/started.${_TASK}"',
        "# The command, in a subshell that alone sees the manifest's environment.",
        "(",
    ]
    for name, value in sorted(env_overrides.items()):
        lines.append(f"  export {name}={shlex.quote(value)}")
    if req.array if req.array is not None else req.options.array:
        # the task's index, under a name that is not Slurm's: a job may plan its own array
        lines.append(f'  export ORCH_ARRAY_TASK_ID="${_TASK}"')
    if req.workdir:
        wd = shlex.quote(req.workdir)
        lines.append(f'  cd {wd} || {{ echo "cannot cd to "{wd} >&2; exit 127; }}')
    lines += [
        "  exec " + " ".join(shlex.quote(a) for a in req.argv),
        ")",
        f"{_RC}=$?",
        "# Written last, atomically: the exit code when accounting (sacct) is disabled.",
        f'printf \'%s\\n\' "${_RC}" > "${_RUN_DIR}/exit.${_TASK}.tmp" && '
        f'mv -f "${_RUN_DIR}/exit.${_TASK}.tmp" "${_RUN_DIR}/exit.${_TASK}"',
        f'exit "${_RC}"',
        "",
    ]
    return "\n".join(lines)
