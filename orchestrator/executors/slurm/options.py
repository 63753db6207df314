"""What a manifest says about its Slurm batch jobs (``executor: {slurm: {...}}``): the options,
validated, and the ones the orchestrator owns."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field, StrictBool, field_validator, model_validator

from orchestrator.executors.slurm.timelimit import SlurmTimeLimit
from orchestrator.manifests.fields import Duration, StrictModel

# Options the orchestrator sets itself on every batch job: a manifest may not override them,
# or tracking (the unique tag), logs and arrays would break.
SLURM_OWNED_OPTIONS = {
    "--job-name": "set by the orchestrator (the run's unique tag)",
    "-J": "set by the orchestrator (the run's unique tag)",
    "--comment": "set by the orchestrator (carries the run id)",
    "--parsable": "set by the orchestrator",
    "--wrap": "the orchestrator writes the batch script",
    "--output": "use executor.slurm.output",
    "-o": "use executor.slurm.output",
    "--error": "use executor.slurm.error",
    "-e": "use executor.slurm.error",
    "--array": "use executor.slurm.array",
    "-a": "use executor.slurm.array",
    "--open-mode": "set by the orchestrator (append, so requeued jobs keep their output)",
    "--chdir": "use spec.workdir",
    "-D": "use spec.workdir",
    "--account": "use executor.slurm.account",
    "-A": "use executor.slurm.account",
    "--partition": "use executor.slurm.partition",
    "-p": "use executor.slurm.partition",
    "--qos": "use executor.slurm.qos",
    "-q": "use executor.slurm.qos",
    "--constraint": "use executor.slurm.constraint",
    "-C": "use executor.slurm.constraint",
    "--time": "use executor.slurm.time",
    "-t": "use executor.slurm.time",
    "--nodes": "use executor.slurm.nodes",
    "-N": "use executor.slurm.nodes",
    "--ntasks": "use executor.slurm.ntasks",
    "-n": "use executor.slurm.ntasks",
    "--cpus-per-task": "use executor.slurm.cpus_per_task",
    "-c": "use executor.slurm.cpus_per_task",
    "--gpus-per-task": "use executor.slurm.gpus_per_task",
    "--mem": "use executor.slurm.mem",
    "--signal": "use executor.slurm.signal",
    "--requeue": "use executor.slurm.requeue",
    "--no-requeue": "use executor.slurm.requeue",
}
_ARRAY_RANGE = r"\d+(-\d+(:\d+)?)?"
ARRAY_PATTERN = rf"^{_ARRAY_RANGE}(,{_ARRAY_RANGE})*(%\d+)?$"
MEM_PATTERN = r"^\d+(\.\d+)?[KMGT]?$"
SIGNAL_PATTERN = r"^([BR]:)?(SIG)?[A-Z0-9]+(@\d+)?$"
_NO_SPACE = r"^\S+$"


def failed_tasks_array(array: str | None, result: dict[str, Any] | None) -> str | None:
    """The array tasks of a run that did not succeed (its result's ``tasks``), with the
    manifest's throttle, so that a retry runs those tasks alone; None when none failed."""
    tasks = (result or {}).get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        return None
    failed = sorted(int(t) for t, r in tasks.items() if r.get("state") != "succeeded")
    if not failed:
        return None
    throttle = (array or "").partition("%")[2] or None
    return ",".join(map(str, failed)) + (f"%{throttle}" if throttle else "")


def parse_array(spec: str) -> tuple[list[int], int | None]:
    """Task ids and throttle of an array spec such as ``0-99%10`` or ``1,3,5-9:2``."""
    body, _, throttle = spec.partition("%")
    ids: list[int] = []
    for part in body.split(","):
        first, _, rest = part.partition("-")
        if not rest:
            ids.append(int(first))
            continue
        last, _, step = rest.partition(":")
        lo, hi, inc = int(first), int(last), int(step or 1)
        if hi < lo or inc < 1:
            raise ValueError(f"array range {part!r} is empty; write low-high with low <= high")
        ids.extend(range(lo, hi + 1, inc))
    if len(set(ids)) != len(ids):
        raise ValueError(f"array {spec!r} names a task twice")
    return sorted(ids), int(throttle) if throttle else None


class SlurmFallback(StrictModel):
    """Where a run's still-pending tasks go when its queue stalls (``executor.slurm.fallback``):
    typically the CPU partition of a job whose first choice is a GPU queue.

    The fields below ``when_unavailable`` replace the run's own options in the fallback job;
    ``null`` removes one (``constraint: null``), ``gpus_per_task: 0`` asks for no GPU. The
    fallback job's tasks see ``ORCH_FALLBACK=1``. See docs/slurm-fallback.md for the rules."""

    after: Duration = Field(
        description="move the pending tasks when none of the run's tasks started for this "
        "long (since submission or the last start) while some wait in the queue"
    )
    when_unavailable: StrictBool = Field(
        True, description="move them at once when Slurm says the partition is down or inactive"
    )
    account: str | None = Field(None, pattern=_NO_SPACE)
    partition: str | None = Field(None, pattern=_NO_SPACE)
    qos: str | None = Field(None, pattern=_NO_SPACE)
    constraint: str | None = Field(None, pattern=_NO_SPACE)
    time: SlurmTimeLimit | None = None
    cpus_per_task: int | None = Field(None, ge=1)
    gpus_per_task: int | None = Field(None, ge=0)
    mem: str | None = Field(None, pattern=MEM_PATTERN)
    extra_args: list[Annotated[str, Field(pattern=r"^-\S+$")]] | None = Field(
        None, description="replaces the run's extra_args in the fallback job"
    )

    @field_validator("after")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("after must be longer than zero (e.g. '30m')")
        return value

    @field_validator("extra_args")
    @classmethod
    def _not_owned(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _check_extra_args(value)


class SlurmOptions(StrictModel):
    """Resources and options of the batch jobs a run becomes (``executor: {slurm: {...}}``)."""

    account: str | None = Field(None, pattern=_NO_SPACE)
    partition: str | None = Field(None, pattern=_NO_SPACE)
    qos: str | None = Field(None, pattern=_NO_SPACE)
    constraint: str | None = Field(None, pattern=_NO_SPACE)
    # A bare number is minutes here, as in sbatch --time (every other duration counts seconds).
    time: SlurmTimeLimit | None = None
    nodes: int | None = Field(None, ge=1)
    ntasks: int | None = Field(None, ge=1)
    cpus_per_task: int | None = Field(None, ge=1)
    gpus_per_task: int | None = Field(None, ge=0)
    mem: str | None = Field(
        None, pattern=MEM_PATTERN, description="memory per node: '4000', '4000M', '16G'"
    )
    array: str | None = Field(
        None, pattern=ARRAY_PATTERN, description="task ids with an optional throttle: '0-99%10'"
    )
    output: str | None = Field(None, pattern=_NO_SPACE, description="stdout path (%j, %A, %a)")
    error: str | None = Field(None, pattern=_NO_SPACE, description="stderr path")
    extra_args: list[Annotated[str, Field(pattern=r"^-\S+$")]] = Field(
        default_factory=list, description="further sbatch options, each '--option=value'"
    )
    signal: str | None = Field(
        None, pattern=SIGNAL_PATTERN, description="e.g. 'B:USR1@120' (signal the batch shell)"
    )
    requeue: StrictBool | None = Field(None, description="--requeue (true) or --no-requeue")
    max_queued: int | None = Field(
        None, ge=1, description="at most this many of this job's runs queued or running at once"
    )
    max_resubmits: int = Field(
        2, ge=0, le=10, description="new submissions after NODE_FAIL or BOOT_FAIL"
    )

    @field_validator("array")
    @classmethod
    def _array_ids(cls, value: str | None) -> str | None:
        if value is not None:
            parse_array(value)
        return value

    fallback: SlurmFallback | None = Field(
        None, description="where pending tasks go when the queue stalls (e.g. GPU -> CPU)"
    )

    @field_validator("extra_args")
    @classmethod
    def _not_owned(cls, value: list[str]) -> list[str]:
        return _check_extra_args(value)

    @model_validator(mode="after")
    def _gpus_need_tasks(self) -> SlurmOptions:
        # sbatch: "--gpus-per-task used without either --gpus or -n/--ntasks is not allowed"
        # (Slurm 22.05 and later): said here, at validate, not at 3 am by sbatch.
        if self.gpus_per_task and self.ntasks is None:
            raise ValueError(
                "gpus_per_task needs ntasks (sbatch refuses --gpus-per-task without "
                "-n/--ntasks): add 'ntasks: 1' for one task with its GPU"
            )
        return self

    def fallback_options(self) -> SlurmOptions:
        """The options of the fallback job: these, with the fallback block's fields put in."""
        if self.fallback is None:
            raise ValueError("no executor.slurm.fallback")
        fb = self.fallback
        update = {k: getattr(fb, k) for k in fb.model_fields_set if k not in _FALLBACK_RULES}
        if update.get("gpus_per_task") == 0:
            update["gpus_per_task"] = None  # no GPU: leave the option out
        if "extra_args" in update and update["extra_args"] is None:
            update["extra_args"] = []
        return self.model_copy(update={**update, "fallback": None})


_FALLBACK_RULES = {"after", "when_unavailable"}


def _check_extra_args(value: list[str]) -> list[str]:
    for arg in value:
        name = arg.split("=", 1)[0]
        if name in SLURM_OWNED_OPTIONS:
            raise ValueError(f"extra_args may not set {name}: {SLURM_OWNED_OPTIONS[name]}")
        if name.startswith("-") and not name.startswith("--") and len(arg) > 2:
            raise ValueError(
                f"write {arg!r} in its long form, '--option=value', so that it can be "
                "checked against the options the orchestrator owns"
            )
    return value


class SlurmExecutor(StrictModel):
    """A manifest's ``executor: {slurm: {...}}``."""

    slurm: SlurmOptions = Field(default_factory=SlurmOptions)

    # what a value that misses its pattern should look like (manifests/messages.py)
    PATTERN_HINTS: ClassVar[dict[tuple[str, ...], str]] = {
        ("slurm", "mem"): "memory is a number with an optional unit K, M, G or T: '4000', "
        "'4000M', '16G'",
        ("slurm", "array"): "an array is task ids and ranges with an optional throttle: "
        "'0-99%10', '1,3,5-9:2'",
        ("slurm", "signal"): "a signal is [B:|R:]NAME[@seconds], e.g. 'B:USR1@120'",
        ("slurm", "extra_args"): "each extra sbatch argument is one '--option=value' or '--flag'",
        ("slurm", "account"): "no whitespace allowed",
        ("slurm", "partition"): "no whitespace allowed",
        ("slurm", "qos"): "no whitespace allowed",
        ("slurm", "constraint"): "no whitespace allowed",
        ("slurm", "output"): "no whitespace allowed in the path",
        ("slurm", "error"): "no whitespace allowed in the path",
    }

    @property
    def name(self) -> str:
        return "slurm"

    @property
    def options(self) -> SlurmOptions:
        return self.slurm
