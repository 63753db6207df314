"""Pydantic models of a manifest (``apiVersion: orchestrator/v1``).

Every model forbids unknown fields so that a typo is an error, not a silently ignored setting.
Job kinds form a discriminated union on ``kind``; a new kind adds one model here (its spec
lives with its task in ``orchestrator/tasks``) and one entry in ``Manifest``.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    Discriminator,
    Field,
    StrictBool,
    Tag,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)

from orchestrator.durations import format_duration
from orchestrator.executors.slurm.timelimit import SlurmTimeLimit
from orchestrator.manifests.fields import (  # noqa: F401 - re-exported for callers
    API_VERSION,
    ENV_NAME_PATTERN,
    NAME_PATTERN,
    Argv,
    Container,
    Duration,
    EnvMap,
    EnvName,
    EnvValue,
    Mount,
    StrictModel,
)
from orchestrator.tasks.alien_token.spec import AliEnTokenSpec
from orchestrator.tasks.o2sync.spec import O2SyncSpec

# --------------------------------------------------------------------------- schedules


def _check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name such as 'UTC' or 'Europe/Zurich'"
        ) from exc
    return name


class CronSchedule(StrictModel):
    """Fire at the instants of a five-field cron expression in ``timezone``."""

    cron: str = Field(description="five fields: minute hour day-of-month month day-of-week")
    timezone: str = Field("UTC", description="IANA time zone name the cron fields are read in")
    jitter: Duration | None = Field(None, description="random delay up to this long")
    catchup: Duration | None = Field(
        None,
        description="run once on start for a miss within this window; older misses are recorded",
    )

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from orchestrator.scheduling.triggers import check_cron

        return check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        return _check_timezone(value)

    @model_validator(mode="after")
    def _jitter_shorter_than_gaps(self) -> CronSchedule:
        # APScheduler computes the next fire from the previous jittered one: a jitter as long
        # as the gap between two fires silently skips fires.
        if not self.jitter:
            return self
        from datetime import UTC, datetime

        from orchestrator.scheduling.triggers import next_fire_times

        fires = next_fire_times(self, datetime.now(UTC), 60)
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(fires)]
        if gaps and self.jitter >= min(gaps):
            raise ValueError(
                f"jitter ({format_duration(self.jitter)}) must be shorter than the shortest gap "
                f"between two fires of {self.cron!r} ({format_duration(min(gaps))})"
            )
        return self


class EverySchedule(StrictModel):
    """Fire at a fixed interval, counted from when the job was first scheduled."""

    every: Duration = Field(description="interval between runs, e.g. '90s' or '6h'")
    jitter: Duration | None = None
    catchup: Duration | None = None

    @field_validator("every")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value < 1:
            raise ValueError("'every' must be at least 1s")
        return value

    @field_validator("jitter")
    @classmethod
    def _jitter_below_interval(cls, value: float | None, info: ValidationInfo) -> float | None:
        # Each fire is placed at its grid point plus up to `jitter`; a jitter as long as the
        # interval would let one fire overtake the next.
        every = info.data.get("every")
        if value is not None and every is not None and value >= every:
            raise ValueError(
                f"'jitter' must be shorter than 'every' ({format_duration(every)}); "
                f"got {format_duration(value)}"
            )
        return value


class ChangeSchedule(StrictModel):
    """Run once each time the manifest is added or its content changes."""

    on: Literal["change"]


def _schedule_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        for key in ("cron", "every", "on"):
            if key in value:
                return key
        return None
    if isinstance(value, BaseModel):
        return {CronSchedule: "cron", EverySchedule: "every", ChangeSchedule: "on"}.get(type(value))
    return None


Schedule = Annotated[
    Annotated[CronSchedule, Tag("cron")]
    | Annotated[EverySchedule, Tag("every")]
    | Annotated[ChangeSchedule, Tag("on")],
    Discriminator(
        _schedule_tag,
        custom_error_type="schedule_form",
        custom_error_message="a schedule needs exactly one of 'cron', 'every' or 'on: change'",
    ),
]


# --------------------------------------------------------------------------- policy


class RetryBackoff(StrictModel):
    """Delay before retry n is ``min(base * 2**(n-1), max)``."""

    base: Duration = 30.0
    max: Duration = 3600.0


def _backoff_from_scalar(value: Any) -> Any:
    # `retry_backoff: 1m` is the common case: a base with the default cap.
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return {"base": value}
    return value


class Policy(StrictModel):
    concurrency: Literal["forbid", "allow", "replace"] = Field(
        "forbid", description="what a due run does while another run of the job is active"
    )
    timeout: Duration = Field(86400.0, description="kill the run's whole process group after this")
    kill_grace: Duration = Field(10.0, description="time between SIGTERM and SIGKILL")
    retries: int = Field(
        0, ge=0, le=100, description="retries after a failed, timed-out or lost run"
    )
    retry_backoff: Annotated[
        RetryBackoff,
        BeforeValidator(
            _backoff_from_scalar, json_schema_input_type=RetryBackoff | str | int | float
        ),
    ] = Field(default_factory=RetryBackoff)
    history: int = Field(100, ge=1, description="finished runs kept per job")
    on_remove: Literal["keep", "cancel"] = Field(
        "keep", description="what happens to a run in flight when its manifest is removed"
    )


# --------------------------------------------------------------------------- slurm

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

    @field_validator("extra_args")
    @classmethod
    def _not_owned(cls, value: list[str]) -> list[str]:
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
    slurm: SlurmOptions = Field(default_factory=SlurmOptions)

    @property
    def name(self) -> str:
        return "slurm"

    @property
    def options(self) -> SlurmOptions:
        return self.slurm


def _executor_tag(value: Any) -> str | None:
    if isinstance(value, str):
        return "local"
    if isinstance(value, dict | SlurmExecutor):
        return "slurm"
    return None


ExecutorChoice = Annotated[
    Annotated[Literal["local"], Tag("local")] | Annotated[SlurmExecutor, Tag("slurm")],
    Discriminator(
        _executor_tag,
        custom_error_type="executor_form",
        custom_error_message="executor is 'local' or a mapping {slurm: {...}}",
    ),
]


# --------------------------------------------------------------------------- kinds


class CommandSpec(StrictModel):
    command: Argv
    env: EnvMap = Field(default_factory=dict)
    workdir: str | None = None
    container: Container | None = None


class ManifestBase(StrictModel):
    apiVersion: Literal["orchestrator/v1"]
    name: str = Field(pattern=NAME_PATTERN, description="unique, DNS-label style")
    description: str = ""
    schedule: Schedule | None = None
    after: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(
        default_factory=list, description="jobs whose successful run triggers this one"
    )
    requires: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(
        default_factory=list,
        description="jobs whose result's valid_until (an AliEnToken job's token expiry) must "
        "outlast this job's run (policy.timeout); if it would not, the run waits and that job "
        "is triggered",
    )
    policy: Policy = Field(default_factory=Policy)
    executor: ExecutorChoice = Field("local", description="'local' (default) or {slurm: {...}}")
    suspend: StrictBool = False

    @property
    def executor_name(self) -> str:
        """The executor that runs this job (the daemon's key for it)."""
        return self.executor if isinstance(self.executor, str) else self.executor.name

    @property
    def executor_options(self) -> Any:
        """That executor's settings from the manifest (None for ``local``)."""
        return None if isinstance(self.executor, str) else self.executor.options

    @field_validator("after")
    @classmethod
    def _unique_after(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("names in 'after' must be unique")
        return value


class CommandManifest(ManifestBase):
    kind: Literal["Command"]
    spec: CommandSpec


class O2SyncManifest(ManifestBase):
    kind: Literal["O2Sync"]
    spec: O2SyncSpec


class AliEnTokenManifest(ManifestBase):
    kind: Literal["AliEnToken"]
    spec: AliEnTokenSpec


Manifest = Annotated[
    CommandManifest | O2SyncManifest | AliEnTokenManifest, Field(discriminator="kind")
]
# kind -> model, for the loader's messages ("valid kinds", "valid fields here").
KIND_MODELS: dict[str, type[ManifestBase]] = {
    "Command": CommandManifest,
    "O2Sync": O2SyncManifest,
    "AliEnToken": AliEnTokenManifest,
}
KINDS = tuple(KIND_MODELS)

MANIFEST_ADAPTER: TypeAdapter[Manifest] = TypeAdapter(Manifest)


def manifest_json_schema() -> dict[str, Any]:
    schema = MANIFEST_ADAPTER.json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://github.com/orchestrator/orchestrator/schemas/manifest.schema.json"
    schema["title"] = "orchestrator manifest (apiVersion orchestrator/v1)"
    return schema
