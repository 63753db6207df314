"""Job kinds, one line each: the manifest union, the JSON Schema, the task runner and the
command line's sub-commands are built from this registry.

A kind is a package with a manifest model (a :class:`~orchestrator.manifests.models.ManifestBase`
subclass with ``kind: Literal["Name"]`` and its ``spec``) and either a Python task (a module
run as ``python -m``, :mod:`orchestrator.tasks.python_task`) or a function that renders the
manifest into a command (:class:`TaskCommand`). Entries name them as ``"module:attribute"``
strings, imported when first needed, so that registering costs nothing and the daemon imports
only what its manifests use. See ``docs/architecture.md``, "Adding a job kind".
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, Union

if TYPE_CHECKING:
    from pydantic import TypeAdapter

    from orchestrator.manifests.fields import Container
    from orchestrator.manifests.models import ManifestBase


@dataclass(frozen=True)
class Kind:
    name: str  # the manifest's `kind:`
    manifest: str  # "module:Class", the manifest model
    task: str | None = None  # a Python task: the module run as `python -m`
    command: str | None = None  # or "module:function": manifest -> TaskCommand
    cli: tuple[str, str] | None = None  # a sub-command group: (name, "module:attribute")
    # A Python task that can plan an array: `python -m <task> --plan` prints the array to submit
    # as its last line (see executors.base.RunSpec.plan_argv)
    plan: bool = False


@dataclass(frozen=True)
class TaskCommand:
    """What a kind that is not a Python task runs: an argv (never a shell string), its own
    environment variables, a working directory, and a container to run it in."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    container: Container | None = None


BUILTIN = (
    Kind(
        "Command",
        "orchestrator.tasks.command:CommandManifest",
        command="orchestrator.tasks.command:command_invocation",
    ),
    Kind(
        "O2Sync",
        "orchestrator.tasks.o2sync.spec:O2SyncManifest",
        task="orchestrator.tasks.o2sync",
        cli=("o2", "orchestrator.tasks.o2sync.cli:o2"),
    ),
    Kind(
        "AliEnToken",
        "orchestrator.tasks.alien_token.spec:AliEnTokenManifest",
        task="orchestrator.tasks.alien_token",
    ),
    Kind(
        "PhotometryBatch",
        "orchestrator.tasks.photometry_batch.spec:PhotometryBatchManifest",
        task="orchestrator.tasks.photometry_batch",
        plan=True,
    ),
)

_registry: dict[str, Kind] = {k.name: k for k in BUILTIN}
_version = 0  # bumped by register/unregister: what is built from the registry is rebuilt


def register(kind: Kind) -> None:
    """Add (or replace) a kind; a plugin package calls this when it is imported."""
    global _version
    if (kind.task is None) == (kind.command is None):
        raise ValueError(f"kind {kind.name!r} needs exactly one of task= and command=")
    _registry[kind.name] = kind
    _version += 1


def unregister(name: str) -> None:
    global _version
    _registry.pop(name, None)
    _version += 1


def get(name: str) -> Kind:
    return _registry[name]


def names() -> tuple[str, ...]:
    return tuple(_registry)


def load(target: str) -> Any:
    """The object a ``"module:attribute"`` string names."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def models() -> dict[str, type[ManifestBase]]:
    """kind -> manifest model (for messages: "valid kinds", "valid fields here")."""
    return dict(_built(_version)[0])


def adapter() -> TypeAdapter[Any]:
    """Validates a manifest of any registered kind (a union discriminated on ``kind``)."""
    return _built(_version)[1]


@cache
def _built(version: int) -> tuple[dict[str, type[ManifestBase]], TypeAdapter[Any]]:
    from pydantic import Field, TypeAdapter

    built = {name: load(kind.manifest) for name, kind in _registry.items()}
    for name, model in built.items():
        declared = model.model_fields["kind"].annotation
        if getattr(declared, "__args__", None) != (name,):
            where = _registry[name].manifest
            raise TypeError(f"{where}: its `kind` field must be Literal[{name!r}]")
    union: Any = Union[tuple(built.values())]  # noqa: UP007 - built at run time
    form: Any = Annotated[union, Field(discriminator="kind")]
    return built, TypeAdapter(form)


def cli_groups() -> dict[str, str]:
    """Sub-command name -> "module:attribute" of each kind's command-line group."""
    return {k.cli[0]: k.cli[1] for k in _registry.values() if k.cli is not None}
