"""What `orchestrator validate` warns about in a valid manifest: things that validate but are
almost surely not what the user meant. Each is positioned like an error
(``path:line:col: warning: field: message``); `validate` exits 0 with warnings unless
``--strict``.

- a placeholder left in (``CHANGE-ME``, as the shipped examples have it);
- ``policy.retry_backoff`` given while ``policy.retries`` is 0 (no retry ever waits);
- ``expect.success_within`` on a job with neither schedule nor ``after``: it can only be
  overdue once it has succeeded by hand;
- ``schedule.catchup`` on ``on: change`` cannot exist (the model refuses it) and is not here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from orchestrator.errors import ManifestProblem
from orchestrator.manifests.document import LoadedManifest
from orchestrator.manifests.positions import position_of

PLACEHOLDER = re.compile(r"CHANGE[-_ ]?ME", re.IGNORECASE)


def _scalars(
    node: yaml.Node, path: tuple[Any, ...] = ()
) -> Iterator[tuple[tuple[Any, ...], yaml.ScalarNode]]:
    if isinstance(node, yaml.ScalarNode):
        yield path, node
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from _scalars(value, (*path, getattr(key, "value", "?")))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _scalars(item, (*path, i))


def warnings_for(loaded: LoadedManifest) -> list[ManifestProblem]:
    """The warnings of one valid manifest (found when it was loaded)."""
    return list(loaded.warnings)


def find_warnings(path: Path, root: yaml.Node, manifest: Any) -> list[ManifestProblem]:
    """The warnings of a manifest that validated, positioned on its YAML ``root``."""
    out = []
    for loc, scalar in _scalars(root):
        if PLACEHOLDER.search(str(scalar.value)):
            out.append(
                _at(path, scalar.start_mark.line + 1, scalar.start_mark.column + 1, loc,
                    f"placeholder {scalar.value!r} left in: replace it before enabling the job")
            )  # fmt: skip
    policy = manifest.policy
    if policy.retries == 0 and "retry_backoff" in policy.model_fields_set:
        line, col = position_of(root, ("policy", "retry_backoff"))
        out.append(
            _at(path, line, col, ("policy", "retry_backoff"),
                "given while policy.retries is 0: no retry ever waits (set retries, or drop it)")
        )  # fmt: skip
    if manifest.expect is not None and manifest.schedule is None and not manifest.after:
        line, col = position_of(root, ("expect",))
        out.append(
            _at(path, line, col, ("expect",),
                "on a job with neither schedule nor 'after': it can only be overdue once a run "
                "started by hand has succeeded")
        )  # fmt: skip
    return sorted(out, key=lambda p: (p.line, p.col))


def _at(path: Path, line: int, col: int, loc: tuple[Any, ...], message: str) -> ManifestProblem:
    return ManifestProblem(path, line, col, ".".join(str(p) for p in loc), message)


def format_warning(p: ManifestProblem) -> str:
    """``path:line:col: warning: field: message``."""
    where = f"{p.field}: " if p.field else ""
    return f"{p.path}:{p.line}:{p.col}: warning: {where}{p.message}"
