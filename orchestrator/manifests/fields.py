"""Field types shared by every manifest kind: durations, environment maps, argv lists,
containers, and the strict base model. Kind specs (``orchestrator/tasks/*/spec.py``) build on
these; ``models.py`` assembles the manifest."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    WithJsonSchema,
    model_validator,
)

from orchestrator.durations import MAX_DURATION_S, format_duration, parse_duration_s

API_VERSION = "orchestrator/v1"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
_DURATION_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?\s*(ms|s|m|h|d|w)\s*)+$"},
        {"type": "number", "minimum": 0, "maximum": MAX_DURATION_S},
    ],
    "description": "a duration: '90s', '10m', '6h', '1h30m', '2d' (a bare number is seconds), "
    "at most 365d",
}

# A duration is held as float seconds and written back in its shortest manifest form.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration_s),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(_DURATION_SCHEMA),
]


def _scalar_to_str(value: Any) -> Any:
    """Environment values and argv elements: YAML reads ``OMP_NUM_THREADS: 4`` as an int and
    ``DEBUG: true`` as a bool; the process wants the text as written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _no_nul(value: str) -> str:
    # The loader refuses NUL in any YAML scalar first, with its position; this keeps models
    # built in code to the same rule (execve reads NUL as the end of a string).
    if "\0" in value:
        raise ValueError("contains a NUL character (\\0), which no argument or value can hold")
    return value


EnvValue = Annotated[
    str,
    BeforeValidator(_scalar_to_str, json_schema_input_type=str | int | float | bool),
    AfterValidator(_no_nul),
]
EnvName = Annotated[str, Field(pattern=ENV_NAME_PATTERN)]
EnvMap = dict[EnvName, EnvValue]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- containers


class Mount(StrictModel):
    # No ':' in either path: every runtime reads it as the source:target separator.
    source: str = Field(pattern=r"^[^:]+$", description="host path (~ and $VARS expanded)")
    target: str = Field(pattern=r"^[^:]+$", description="path inside the container")
    readonly: StrictBool = False


def _mount_from_string(value: Any) -> Any:
    # The familiar `src:dst[:ro]` short form, as docker/podman write it.
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) == 2:
            return {"source": parts[0], "target": parts[1]}
        if len(parts) == 3 and parts[2] in ("ro", "rw"):
            return {"source": parts[0], "target": parts[1], "readonly": parts[2] == "ro"}
        raise ValueError(f"mount {value!r} is not 'source:target' or 'source:target:ro'")
    return value


class Container(StrictModel):
    runtime: Literal["shifter", "podman-hpc", "podman", "docker", "apptainer", "none"]
    image: str | None = Field(None, min_length=1)
    mounts: list[
        Annotated[Mount, BeforeValidator(_mount_from_string, json_schema_input_type=Mount | str)]
    ] = Field(default_factory=list)
    env: EnvMap = Field(default_factory=dict)
    extra_args: list[str] = Field(default_factory=list, description="passed to the runtime as is")

    @model_validator(mode="after")
    def _image_needed(self) -> Container:
        if self.runtime != "none" and not self.image:
            raise ValueError(f"runtime {self.runtime!r} needs an 'image'")
        return self


def _argv_only(value: Any) -> Any:
    if isinstance(value, str):
        raise ValueError(
            "command must be an argv list, never a shell string; "
            'for a shell write ["bash", "-c", "..."]'
        )
    return value


Argv = Annotated[list[EnvValue], BeforeValidator(_argv_only), Field(min_length=1)]
