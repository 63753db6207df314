"""The Slurm client commands: argv lists, explicit timeouts, return codes checked.

Every failure becomes a ``SlurmCommandError`` that says whether it is transient (try again
later: controller down, hung, munge trouble) and, for sbatch, whether the job may have been
created anyway (``ambiguous``: a timeout, ``Socket timed out`` — /shared/notes/slurm.md measured
that the job can exist then). Callers must look an ambiguous submission up by its tag before
submitting again.
"""

from __future__ import annotations

import getpass
import os
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.errors import OrchestratorError
from orchestrator.executors.slurm.parse import (
    SACCT_FORMAT,
    SQUEUE_FORMAT,
    JobRow,
    accounting_disabled,
    is_permanent_error,
    is_transient_error,
    parse_sacct,
    parse_squeue,
)


class SlurmCommandError(OrchestratorError):
    def __init__(
        self, command: str, message: str, *, transient: bool, ambiguous: bool = False
    ) -> None:
        self.command = command
        self.message = message.strip() or f"{command} failed without a message"
        self.transient = transient
        self.ambiguous = ambiguous
        super().__init__(f"{command}: {self.message}")


class AccountingDisabledError(SlurmCommandError):
    """sacct answered that accounting storage is disabled (no slurmdbd): not an error of the
    cluster, a fact of this deployment."""


# Variables Slurm's commands read as options (SBATCH_*, SALLOC_*, SRUN_*) or that describe the
# allocation they run in (SLURM_*): a daemon started inside a Slurm job (a scrontab job) would
# otherwise pass its own allocation's CPUs, memory and partition to every job it submits, and
# sbatch exports them into the job (--export=ALL). SLURM_CONF says which cluster: kept.
_SLURM_PREFIXES = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_")
_KEPT = ("SLURM_CONF",)


def clean_environment(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the variables of a surrounding Slurm allocation or Slurm's option
    variables (all but ``SLURM_CONF``): what the daemon's Slurm commands run with."""
    return {k: v for k, v in env.items() if not k.startswith(_SLURM_PREFIXES) or k in _KEPT}


_COUNT_LOCK = threading.Lock()


@dataclass
class SlurmClient:
    timeout_s: float = float(os.environ.get("ORCH_SLURM_CMD_TIMEOUT_S", "45"))
    user: str = ""
    _calls: dict[str, int] = field(default_factory=dict)
    _errors: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.user = self.user or getpass.getuser()

    def counts(self) -> dict[str, dict[str, int]]:
        """Calls of each Slurm command since start, and those that failed (for metrics)."""
        with _COUNT_LOCK:
            return {"calls": dict(self._calls), "errors": dict(self._errors)}

    def _run(self, argv: list[str], command: str) -> str:
        with _COUNT_LOCK:
            self._calls[command] = self._calls.get(command, 0) + 1
        try:
            return self._call(argv, command)
        except SlurmCommandError:
            with _COUNT_LOCK:
                self._errors[command] = self._errors.get(command, 0) + 1
            raise

    def _call(self, argv: list[str], command: str) -> str:
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                check=False,
                env=clean_environment(os.environ),
            )
        except subprocess.TimeoutExpired as exc:
            raise SlurmCommandError(
                command, f"no answer within {self.timeout_s:g} s", transient=True, ambiguous=True
            ) from exc
        except FileNotFoundError as exc:
            raise SlurmCommandError(
                command,
                f"{argv[0]} not found on PATH; is this a Slurm login node?",
                transient=False,
            ) from exc
        if done.returncode != 0:
            message = (done.stderr or done.stdout).strip()
            if command == "sacct" and accounting_disabled(message):
                raise AccountingDisabledError(command, message, transient=False)
            transient = is_transient_error(message) or not is_permanent_error(message)
            ambiguous = command == "sbatch" and "socket timed out" in message.lower()
            raise SlurmCommandError(command, message, transient=transient, ambiguous=ambiguous)
        return done.stdout

    def sbatch(self, script: Path, array: str | None = None) -> str:
        """Submit; returns the job id (the array's id for an array). ``array`` overrides the
        script's ``--array`` (the fallback job of a stalled queue takes the moved tasks)."""
        argv = ["sbatch", "--parsable", *([f"--array={array}"] if array else []), str(script)]
        out = self._run(argv, "sbatch")
        job_id = out.strip().splitlines()[-1].split(";")[0] if out.strip() else ""
        if not job_id.isdigit():
            raise SlurmCommandError(
                "sbatch", f"unexpected answer {out.strip()!r}", transient=True, ambiguous=True
            )
        return job_id

    def squeue(self) -> list[JobRow]:
        """This user's jobs in every state squeue still knows (finished ones stay for
        MinJobAge), array tasks one per line: one call, whatever the number of runs."""
        out = self._run(
            ["squeue", "-h", "-r", "-u", self.user, "--states=all", "-o", SQUEUE_FORMAT],
            "squeue",
        )
        return parse_squeue(out)

    def sacct(self, job_ids: Sequence[str], start: datetime) -> list[JobRow]:
        """Final states and exit codes of the given jobs (arrays expand to their tasks)."""
        return self._sacct(["-j", ",".join(job_ids)], start)

    def sacct_by_name(self, names: Sequence[str], start: datetime) -> list[JobRow]:
        """Jobs by --job-name (the run's tag), to find a submission whose id was never seen."""
        return self._sacct(["-u", self.user, f"--name={','.join(names)}"], start)

    def _sacct(self, selection: list[str], start: datetime) -> list[JobRow]:
        """Allocations only (-X), parsable, with an explicit start time (sacct's default
        window would miss older jobs)."""
        argv = ["sacct", "-X", "-n", "-P", f"--format={SACCT_FORMAT}"]
        argv += ["-S", start.strftime("%Y-%m-%dT%H:%M:%S"), *selection]
        return parse_sacct(self._run(argv, "sacct"))

    def sacct_with_usage(
        self, job_ids: Sequence[str], start: datetime
    ) -> tuple[list[JobRow], dict[tuple[str, str], dict[str, Any]]]:
        """Final states and exit codes, and what each job used (its steps included: a step
        has the peak memory), in one call (executors.slurm.usage)."""
        from orchestrator.executors.slurm.usage import USAGE_FIELDS, parse_usage

        argv = ["sacct", "-n", "-P", f"--format={SACCT_FORMAT},{USAGE_FIELDS}"]
        argv += ["-S", start.strftime("%Y-%m-%dT%H:%M:%S"), "-j", ",".join(job_ids)]
        text = self._run(argv, "sacct")
        return parse_sacct(text), parse_usage(text)

    def scancel(self, job_ids: Sequence[str] = (), name: str | None = None) -> None:
        argv = ["scancel"]
        if name:
            argv += [f"--name={name}", "-u", self.user]
        argv += list(job_ids)
        self._run(argv, "scancel")

    def hold(self, job_ids: Sequence[str]) -> None:
        """``scontrol uhold``: the pending ones among these jobs or array tasks (``123_4``)
        cannot start until released; a running one goes on (its priority is set to 0)."""
        self._run(["scontrol", "uhold", *job_ids], "scontrol")

    def release(self, job_ids: Sequence[str]) -> None:
        self._run(["scontrol", "release", *job_ids], "scontrol")

    def partitions(self) -> set[str]:
        out = self._run(["sinfo", "-h", "-o", "%R"], "sinfo")
        return {line.strip() for line in out.splitlines() if line.strip()}

    def accounts(self) -> set[str]:
        """Accounts this user may charge (their associations)."""
        out = self._run(
            ["sacctmgr", "-n", "-P", "show", "assoc", f"user={self.user}", "format=account"],
            "sacctmgr",
        )
        return {line.strip() for line in out.splitlines() if line.strip()}

    def qos_names(self) -> set[str]:
        out = self._run(["sacctmgr", "-n", "-P", "show", "qos", "format=name"], "sacctmgr")
        return {line.strip() for line in out.splitlines() if line.strip()}
