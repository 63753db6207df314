"""Pydantic validation errors -> ``path:line:col: field: message`` problems.

Each error's location (``spec.command.0``) is walked down the composed YAML nodes to the value
it is about; the messages say what would be valid (the fields a mapping accepts, the form a
pattern wants) instead of repeating Pydantic's internal names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from orchestrator.errors import ManifestProblem
from orchestrator.manifests.models import kind_names
from orchestrator.manifests.positions import key_node, locate


def _union_tags() -> dict[str, dict[str, Any]]:
    """Top-level fields that hold a tagged union, and each tag's model (None: not a model).
    Pydantic puts the tag in an error's location after the field name; it is not in the YAML."""
    from orchestrator.executors.registry import option_models
    from orchestrator.manifests import models

    return {
        "schedule": {
            "cron": models.CronSchedule,
            "every": models.EverySchedule,
            "on": models.ChangeSchedule,
        },
        "executor": {"local": None, **option_models()},
    }


def field_path(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop the union tags Pydantic puts in an error location: the kind (``Command``) first,
    the form of a union field (``schedule``'s cron/every/on, ``executor``'s name) after
    its name, and validator wrappers."""
    tags = _union_tags()
    out: list[Any] = []
    parts = list(loc)
    if parts and parts[0] in kind_names():
        parts.pop(0)
    i = 0
    while i < len(parts):
        part = parts[i]
        if isinstance(part, str) and ("[" in part or part.startswith("function-")):
            i += 1
            continue
        out.append(part)
        if len(out) == 1 and part in tags and i + 1 < len(parts) and parts[i + 1] in tags[part]:
            i += 1  # the tag
        i += 1
    return tuple(out)


def problems_from_validation(
    path: Path, root: yaml.MappingNode, obj: dict[str, Any], exc: ValidationError
) -> list[ManifestProblem]:
    problems: list[ManifestProblem] = []
    seen: set[tuple[int, int, str]] = set()
    for err in exc.errors(include_url=False):
        loc = field_path(tuple(err["loc"]))
        fld_parts = [str(p) for p in loc]
        node, _ = locate(root, loc)
        if err["type"] == "extra_forbidden" and loc:
            parent, _ = locate(root, loc[:-1])
            key = key_node(parent, loc[-1]) if isinstance(parent, yaml.MappingNode) else None
            node = key or node
        message = _message(err, fld_parts)
        mark = node.start_mark
        ident = (mark.line, mark.column, message)
        if ident in seen:
            continue
        seen.add(ident)
        problems.append(
            ManifestProblem(path, mark.line + 1, mark.column + 1, ".".join(fld_parts), message)
        )
    problems.sort(key=lambda p: (p.line, p.col))
    return problems


# Hints for a value that does not match its pattern, keyed by the end of the field's path
# (indices left out): the same bare name means different things in different places. Each
# executor's option model adds its own (PATTERN_HINTS, executors/registry.py).
_PATTERN_HINTS: dict[tuple[str, ...], str] = {
    ("mounts", "source"): "a mount path may not contain ':' (every runtime reads it as the "
    "separator)",
    ("mounts", "target"): "a mount path may not contain ':' (every runtime reads it as the "
    "separator)",
}


def _pattern_hints() -> dict[tuple[str, ...], str]:
    from orchestrator.executors.registry import option_models

    hints = dict(_PATTERN_HINTS)
    for model in option_models().values():
        hints.update(getattr(model, "PATTERN_HINTS", {}))
    return hints


def _pattern_hint(fld_parts: list[str]) -> str | None:
    path = tuple(p for p in fld_parts if not p.isdigit())
    hints = _pattern_hints()
    return next((hint for key, hint in hints.items() if path[-len(key) :] == key), None)


def _message(err: Any, fld_parts: list[str]) -> str:
    kind = err["type"]
    msg: str = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind == "missing":
        return f"required field '{fld_parts[-1] if fld_parts else ''}' is missing"
    if fld_parts == ["executor"] and kind == "literal_error":
        from orchestrator.manifests.models import EXECUTOR_FORMS

        return f"executor is {EXECUTOR_FORMS}, not {err['input']!r}"
    hint = _pattern_hint(fld_parts) if kind == "string_pattern_mismatch" else None
    if hint is not None:
        return hint
    form = _form_hint(kind, err["input"], fld_parts)
    if form is not None:
        return form
    if kind == "extra_forbidden":
        name = fld_parts[-1] if fld_parts else "?"
        valid = _valid_fields(err["loc"][:-1])
        hint = f"; valid fields here: {', '.join(valid)}" if valid else ""
        return f"unknown field '{name}'{hint}"
    if kind == "model_type":
        return "expected a mapping of fields, got " + type(err["input"]).__name__
    if kind == "string_pattern_mismatch" and "env" in fld_parts[:-1]:
        return (
            f"{fld_parts[-1]!r} is not a valid environment variable name: letters, digits "
            "and '_', not starting with a digit"
        )
    if kind == "string_pattern_mismatch" and fld_parts and fld_parts[-1] == "name":
        return (
            "must be a DNS label: lower-case letters, digits and '-', starting and ending "
            "with a letter or digit, at most 63 characters"
        )
    return msg[:1].lower() + msg[1:]


def _form_hint(kind: str, value: Any, fld_parts: list[str]) -> str | None:
    """A message for the form the user wrote, where it tells more than the type's: a bare
    cron line or duration as a schedule, two schedule kinds at once, env as a list, a mount
    that is neither form."""
    if kind == "schedule_form":
        return _schedule_hint(value)
    two_kinds = fld_parts[:1] == ["schedule"] and len(fld_parts) == 2
    if kind == "extra_forbidden" and two_kinds and fld_parts[1] in ("cron", "every", "on"):
        return (
            "a schedule needs exactly one of 'cron', 'every' or 'on: change', not "
            f"'{fld_parts[1]}' beside another"
        )
    if kind == "dict_type" and fld_parts[-1:] == ["env"] and isinstance(value, list):
        return 'env is a mapping of NAME: value, not a list; write e.g. {A: "1", B: two}'
    if kind == "model_type" and "mounts" in fld_parts:
        return (
            "a mount is 'source:target' (or 'source:target:ro') or {source, target, "
            f"readonly}}, not {type(value).__name__} {str(value)[:40]!r}"
        )
    return None


def _schedule_hint(value: Any) -> str:
    """The schedule message for the form the user wrote: a bare cron line or duration gets
    the mapping it belongs in; two kinds at once are named."""
    base = "a schedule needs exactly one of 'cron', 'every' or 'on: change'"
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("@") or len(text.split()) == 5:
            return f'{base}: write {{cron: "{text}"}}'
        from orchestrator.durations import parse_duration_s

        try:
            parse_duration_s(text)
        except (ValueError, OverflowError):
            return f'{base}, e.g. {{cron: "0 3 * * *"}} or {{every: 6h}}'
        return f"{base}: write {{every: {text}}}"
    if isinstance(value, dict):
        given = [k for k in ("cron", "every", "on") if k in value]
        if len(given) > 1:
            return f"{base}, not both {given[0]!r} and {given[1]!r}"
    return base


def _valid_fields(loc: tuple[Any, ...]) -> list[str]:
    """The field names the model at ``loc`` accepts (for 'unknown field' hints)."""
    from orchestrator import kinds as registry

    kinds = registry.models()
    parts = list(loc)
    if not parts or parts[0] not in kinds:
        return []
    model: Any = kinds[parts.pop(0)]
    tags = _union_tags()
    for i, part in enumerate(field_path(tuple(parts))):
        if isinstance(part, int):
            continue
        if i == 0 and part in tags and part in getattr(model, "model_fields", {}):
            # Which form of the union: the tag that followed the field name in ``loc``.
            raw_index = parts.index(part)
            tag = parts[raw_index + 1] if raw_index + 1 < len(parts) else None
            if tag in tags[part]:
                model = tags[part][tag]
                continue
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return []
        model = _model_of(fields[part].annotation)
    if model is None or not hasattr(model, "model_fields"):
        return []
    return list(model.model_fields)


def _model_of(annotation: Any) -> Any:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None
