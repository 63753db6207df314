"""Pydantic models of a manifest (``apiVersion: orchestrator/v1``).

Every model forbids unknown fields so that a typo is an error, not a silently ignored setting.
What every manifest has is :class:`ManifestBase`; each job kind's model (``kind`` and ``spec``)
lives with its task and is listed in :mod:`orchestrator.kinds`, which builds the union that
validates a manifest (discriminated on ``kind``) and the JSON Schema.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    Discriminator,
    Field,
    StrictBool,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from orchestrator.durations import format_duration
from orchestrator.executors.registry import option_models
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
from orchestrator.notify.model import Notify

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

    cron: str = Field(
        description="crontab(5): five fields, minute hour day-of-month month day-of-week "
        "(0 and 7 are Sunday), or a macro (@hourly, @daily, @weekly, @monthly, @yearly)"
    )
    timezone: str = Field("UTC", description="IANA time zone name the cron fields are read in")
    jitter: Duration | None = Field(None, description="random delay up to this long")
    catchup: Duration | None = Field(
        None,
        description="run once on start for a miss within this window; older misses are recorded",
    )

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from orchestrator.scheduling.cron import check

        return check(value)

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
        from zoneinfo import ZoneInfo

        from orchestrator.scheduling import cron

        fires = cron.fires_after(
            cron.parse(self.cron), ZoneInfo(self.timezone), datetime.now(UTC), 60
        )
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


_EXECUTOR_MODELS = option_models()
EXECUTOR_FORMS = " or ".join(["'local'", *(f"{{{name}: {{...}}}}" for name in _EXECUTOR_MODELS)])


def _executor_tag(value: Any) -> str | None:
    if isinstance(value, str):
        return "local"
    if isinstance(value, dict):
        return next((key for key in value if key in _EXECUTOR_MODELS), None)
    name = getattr(value, "name", None)
    return name if name in _EXECUTOR_MODELS else None


# 'local', or the mapping form of a registered executor (executors/registry.py OPTION_MODELS)
_executor_union: Any = Union[
    (
        Annotated[Literal["local"], Tag("local")],
        *(Annotated[model, Tag(name)] for name, model in _EXECUTOR_MODELS.items()),
    )
]
ExecutorChoice = Annotated[
    _executor_union,
    Discriminator(
        _executor_tag,
        custom_error_type="executor_form",
        custom_error_message=f"executor is {EXECUTOR_FORMS}",
    ),
]


class Expect(StrictModel):
    """What a job is expected to achieve; not achieving it makes the deployment degraded
    (``status`` and ``check`` exit 1) and names the job."""

    success_within: Duration = Field(
        description="a successful run at least this often, e.g. '26h' for a nightly job: a "
        "dead-man's switch (counted from the last success, else from when its schedule started)"
    )

    @field_validator("success_within")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("success_within must be longer than zero (e.g. '26h')")
        return value


# --------------------------------------------------------------------------- kinds


class ManifestBase(StrictModel):
    """What every job kind's manifest has; each kind narrows ``kind`` to its own name and adds
    its ``spec`` (:mod:`orchestrator.kinds`)."""

    apiVersion: Literal["orchestrator/v1"]
    kind: str
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
    executor: ExecutorChoice = Field(
        "local", description=f"{EXECUTOR_FORMS}; 'local' is the default"
    )
    suspend: StrictBool = False
    expect: Expect | None = None
    notify: Notify | None = Field(
        None,
        description="messages on failure, recovery, alert and overdue (Apprise URLs); fields "
        "left out are the daemon's (orchestrator.toml [notify])",
    )

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


# The type of a validated manifest in code: every kind's model is a ManifestBase.
Manifest = ManifestBase


def kind_names() -> tuple[str, ...]:
    """The registered kinds (:mod:`orchestrator.kinds`)."""
    from orchestrator import kinds

    return kinds.names()


def validate_manifest(obj: Any) -> ManifestBase:
    """A manifest of any registered kind from plain data (raises pydantic's ValidationError)."""
    from orchestrator import kinds

    manifest = kinds.adapter().validate_python(obj)
    assert isinstance(manifest, ManifestBase)
    return manifest


def manifest_json_schema() -> dict[str, Any]:
    from orchestrator import kinds

    schema = kinds.adapter().json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://github.com/orchestrator/orchestrator/schemas/manifest.schema.json"
    schema["title"] = "orchestrator manifest (apiVersion orchestrator/v1)"
    return schema
