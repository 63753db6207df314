"""YAML nodes and their positions: the manifest YAML loader, walking a field path down the
composed node tree, and turning YAML errors into ``path:line:col`` problems.

The YAML is composed into nodes first so that a Pydantic error location (``spec.command.0``)
can be walked back to the node that holds the bad value, whose start mark gives the line and
column. YAML 1.1 booleans (``on``, ``yes``, ``no``, ``off``) are read as plain strings: only
``true``/``false`` are booleans, as in YAML 1.2, so that ``on: change`` means what it says.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from orchestrator.errors import ManifestError, ManifestProblem
from orchestrator.manifests.fields import API_VERSION
from orchestrator.manifests.models import kind_names

MERGE_TAG = "tag:yaml.org,2002:merge"

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ManifestYamlLoader(_BaseLoader):  # type: ignore[misc]  # PyYAML: untyped
    """SafeLoader with YAML 1.2 booleans (true/false only)."""


ManifestYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}
ManifestYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def single(path: Path, line: int, col: int, fld: str, message: str) -> ManifestError:
    """A ManifestError holding one problem."""
    return ManifestError([ManifestProblem(path, line, col, fld, message)])


def at_node(path: Path, node: yaml.Node, fld: str, message: str) -> ManifestError:
    """A ManifestError holding one problem at ``node``'s start."""
    mark = node.start_mark
    return single(path, mark.line + 1, mark.column + 1, fld, message)


def char_at(text: str, line: int, column: int) -> str:
    lines = text.splitlines()
    if 0 <= line < len(lines) and 0 <= column < len(lines[line]):
        return lines[line][column]
    return ""


def expected_top() -> str:
    return (
        f"expected a mapping with apiVersion: {API_VERSION}, kind ({', '.join(kind_names())}), "
        "name and spec"
    )


def marked_problem(path: Path, text: str, exc: yaml.MarkedYAMLError) -> ManifestError:
    """A YAML error with marks, positioned, with hints for tabs and multiple documents."""
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    what = exc.problem or str(exc)
    problem_mark = exc.problem_mark
    if problem_mark is not None and char_at(text, problem_mark.line, problem_mark.column) == "\t":
        what += " (a tab: YAML indents with spaces only)"
    ctx = exc.context_mark
    if (
        exc.context
        and ctx is not None
        and problem_mark is not None
        and (ctx.line != problem_mark.line)
    ):
        where = f"line {ctx.line + 1}, column {ctx.column + 1}"
        what += f" ({exc.context} that starts at {where})"
    if "expected a single document" in str(exc):
        what = "one YAML document per file; split the others into their own files"
    return single(path, line, col, "", f"YAML: {what}")


def yaml_problem(path: Path, text: str, exc: yaml.YAMLError) -> ManifestError:
    """A YAML error without marks; a ReaderError still knows its character offset."""
    line, col = 1, 1
    position = getattr(exc, "position", None)
    if isinstance(position, int):
        before = text[:position]
        line = before.count("\n") + 1
        col = position - (before.rfind("\n") + 1) + 1
    what = getattr(exc, "reason", None) or str(exc).splitlines()[0]
    character = getattr(exc, "character", None)
    if isinstance(character, str) and len(character) == 1:
        character = ord(character)
    if isinstance(character, int):
        what = f"{what}: character U+{character:04X}"
    return single(path, line, col, "", f"YAML: {what}")


def _walk(root: yaml.Node) -> Any:
    """Each node once, depth first in document order, with its field path; aliases share
    nodes, and may be recursive, so a node seen before is not entered again. Mapping keys are
    yielded too, with the path of their value."""
    stack: list[tuple[yaml.Node, tuple[str, ...], bool]] = [(root, (), False)]
    seen_nodes: set[int] = set()
    while stack:
        node, where, is_key = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        yield node, where, is_key
        children: list[tuple[yaml.Node, tuple[str, ...], bool]] = []
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
                children.append((key, (*where, name), True))
                children.append((value, (*where, name), False))
        elif isinstance(node, yaml.SequenceNode):
            children = [(v, (*where, str(i)), False) for i, v in enumerate(node.value)]
        stack.extend(reversed(children))


def first_duplicate_key(
    root: yaml.Node,
) -> tuple[str, yaml.ScalarNode, yaml.ScalarNode] | None:
    """The first key given twice in one mapping (PyYAML keeps the last silently): its field
    path, the first key node and the repeated one. Merge keys (``<<``) may be overridden."""
    for node, where, _ in _walk(root):
        if not isinstance(node, yaml.MappingNode):
            continue
        keys: dict[tuple[str, str], yaml.ScalarNode] = {}
        for key, _value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != MERGE_TAG:
                first = keys.setdefault((key.tag, key.value), key)
                if first is not key:
                    return ".".join((*where, str(key.value))), first, key
    return None


def first_nul_scalar(root: yaml.Node) -> tuple[str, yaml.ScalarNode] | None:
    """The first scalar holding a NUL character (YAML's ``"\\0"`` escape) and its field path.

    Every string of a manifest ends up in a process's argv or environment, in a path, or in a
    log line; the kernel reads NUL as the end of a string, so ``execve`` refuses it (the run
    cannot start) or a path is silently cut short. Refused in the whole document, for every
    kind, before validation.
    """
    for node, where, _ in _walk(root):
        if isinstance(node, yaml.ScalarNode) and "\0" in node.value:
            return ".".join(where), node
    return None


def key_node(node: yaml.MappingNode, key: Any) -> yaml.Node | None:
    for k, _ in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == str(key):
            return k
    return None


def value_node(node: yaml.MappingNode, key: Any) -> yaml.Node | None:
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == str(key):
            return v if isinstance(v, yaml.Node) else None
    return None


def locate(root: yaml.Node, loc: tuple[Any, ...]) -> tuple[yaml.Node, bool]:
    """Walk a field path down the node tree: the deepest node reached, and whether the
    whole path was found (a missing field stops at its parent mapping)."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            child = value_node(node, part)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if part < len(node.value) else None
        else:
            child = None
        if child is None:
            return node, False
        node = child
    return node, True


def position_of(root: yaml.Node, loc: tuple[Any, ...]) -> tuple[int, int]:
    """1-based line and column of the node at ``loc`` (or of the deepest one found)."""
    node, _ = locate(root, loc)
    return node.start_mark.line + 1, node.start_mark.column + 1
