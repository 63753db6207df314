"""One manifest: bytes -> a validated model, with every problem positioned as ``path:line:col``.

The order of the checks is the order of the costs: bounds first (limits.py: size, depth and
expansion, in one streamed pass that builds nothing), then the composed node tree (duplicate
keys, NUL characters), then Python objects and Pydantic validation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from orchestrator.errors import ManifestError, ManifestProblem
from orchestrator.manifests.limits import MAX_MANIFEST_BYTES, check_yaml_limits
from orchestrator.manifests.messages import problems_from_validation
from orchestrator.manifests.models import Manifest, kind_names, validate_manifest
from orchestrator.manifests.positions import (
    ManifestYamlLoader,
    at_node,
    expected_top,
    first_duplicate_key,
    first_nul_scalar,
    key_node,
    marked_problem,
    position_of,
    single,
    value_node,
    yaml_problem,
)
from orchestrator.manifests.reading import READ_TIMEOUT_S, read_manifest_file


@dataclass(frozen=True)
class LoadedManifest:
    """A valid manifest, where it came from, and where its cross-file fields are in the file
    (``positions``: ``name``, ``after.0``, ``requires.1``, ... -> 1-based line and column), so
    that a clash or a dangling reference found later is positioned without reading it again."""

    path: Path
    content_hash: str
    manifest: Manifest
    positions: Mapping[str, tuple[int, int]] = field(default_factory=dict, compare=False)
    # what `validate` warns about (manifests/warnings.py): a placeholder left in, ...
    warnings: tuple[ManifestProblem, ...] = field(default=(), compare=False)

    @property
    def name(self) -> str:
        return self.manifest.name

    def position(self, fld: str) -> tuple[int, int]:
        return self.positions.get(fld, (1, 1))


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def compose(path: Path, data: bytes) -> tuple[str, yaml.Node | None]:
    """Decode and compose ``data`` within the bounds; the text and the root node (None for an
    empty document). Raises ManifestError, positioned."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise single(
            path, 1, 1, "", f"too large for a manifest (at most {MAX_MANIFEST_BYTES:,} bytes)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise single(path, line, 1, "", f"not UTF-8 text ({exc.reason})") from exc
    loader = ManifestYamlLoader(text)
    try:
        check_yaml_limits(text, ManifestYamlLoader)
        return text, loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        raise marked_problem(path, text, exc) from exc
    except yaml.YAMLError as exc:  # ReaderError (control characters) has no marks
        raise yaml_problem(path, text, exc) from exc
    finally:
        loader.dispose()


def load_manifest_bytes(path: Path, data: bytes) -> LoadedManifest:
    """Parse and validate one manifest's bytes; raise ManifestError with every problem found."""
    text, node = compose(path, data)
    if node is None or (
        # '---' alone: a document whose content is an empty plain scalar (null)
        isinstance(node, yaml.ScalarNode) and node.value == "" and not node.style
    ):
        raise single(path, 1, 1, "", "empty manifest; " + expected_top())
    duplicate = first_duplicate_key(node)
    if duplicate is not None:
        fld, first, second = duplicate
        raise at_node(
            path,
            second,
            fld,
            f"duplicate key {second.value!r} (first given at line "
            f"{first.start_mark.line + 1}); each key may appear once in a mapping",
        )
    nul = first_nul_scalar(node)
    if nul is not None:
        fld, scalar = nul
        raise at_node(
            path,
            scalar,
            fld,
            "contains a NUL character (\\0); the kernel reads it as the end of the text, so "
            "no command, environment value or path can hold one",
        )
    loader = ManifestYamlLoader(text)
    try:
        obj = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise single(path, line, col, "", f"YAML: {exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise yaml_problem(path, text, exc) from exc
    finally:
        loader.dispose()
    if not isinstance(node, yaml.MappingNode) or not isinstance(obj, dict):
        raise at_node(path, node, "", expected_top())
    bad_keys = [k for k in obj if not isinstance(k, str)]
    if bad_keys:
        raise at_node(path, key_node(node, bad_keys[0]) or node, "", "field names must be text")
    if "kind" not in obj:
        raise at_node(
            path,
            node,
            "kind",
            f"required field 'kind' is missing; valid kinds: {', '.join(kind_names())}",
        )
    kind = obj.get("kind")
    if kind not in kind_names():
        raise at_node(
            path,
            value_node(node, "kind") or node,
            "kind",
            f"unknown kind {kind!r}; valid kinds: {', '.join(kind_names())}",
        )
    try:
        manifest = validate_manifest(obj)
    except ValidationError as exc:
        raise ManifestError(problems_from_validation(path, node, obj, exc)) from exc
    from orchestrator.manifests.warnings import find_warnings

    return LoadedManifest(
        path=path,
        content_hash=content_hash(data),
        manifest=manifest,
        positions=_cross_file_positions(node, manifest),
        warnings=tuple(find_warnings(path, node, manifest)),
    )


def _cross_file_positions(root: yaml.Node, manifest: Manifest) -> dict[str, tuple[int, int]]:
    positions = {"name": position_of(root, ("name",))}
    for fld in ("after", "requires"):
        for i, _ in enumerate(getattr(manifest, fld)):
            positions[f"{fld}.{i}"] = position_of(root, (fld, i))
    return positions


def load_manifest(
    path: Path, check_perms: bool = True, timeout_s: float = READ_TIMEOUT_S
) -> LoadedManifest:
    """Read (regular files only, size-capped, under a deadline) and validate one manifest."""
    read = read_manifest_file(path, check_perms=check_perms, timeout_s=timeout_s)
    if read.gone:
        raise single(path, 1, 1, "", "no such file or directory")
    if read.error is not None:
        raise read.error
    assert read.data is not None
    return load_manifest_bytes(path, read.data)


def field_position(path: Path, loc: tuple[Any, ...]) -> tuple[int, int]:
    """Line and column (1-based) of the value at field path ``loc`` in a manifest file, for
    problems found after loading (e.g. a partition the cluster does not have); 1:1 when the
    file cannot be read or parsed again (it changed under us)."""
    read = read_manifest_file(path, check_perms=False)
    if read.data is None:
        return 1, 1
    try:
        _, root = compose(path, read.data)
    except ManifestError:
        return 1, 1
    if root is None:
        return 1, 1
    return position_of(root, loc)
