"""YAML manifests -> validated models, with every problem positioned as ``path:line:col``.

The YAML is composed into nodes first so that a Pydantic error location (``spec.command.0``)
can be walked back to the node that holds the bad value, whose start mark gives the line and
column. YAML 1.1 booleans (``on``, ``yes``, ``no``, ``off``) are read as plain strings: only
``true``/``false`` are booleans, as in YAML 1.2, so that ``on: change`` means what it says.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from orchestrator.errors import ManifestError, ManifestProblem, UnsafePermissionsError
from orchestrator.manifests.models import API_VERSION, KINDS, MANIFEST_ADAPTER, Manifest

MANIFEST_SUFFIXES = (".yaml", ".yml")
# A file changed this recently may change again without its stat changing (time stamps are
# coarse: a kernel tick, or a second on some file systems), so its parse is not cached yet;
# git calls these index entries "racily clean".
_RACY_WINDOW_NS = 2_000_000_000
# Deeper nesting is refused before composing: libyaml's composer recurses on the C stack and
# segfaults near 50,000 levels (taking the daemon with it); no manifest needs more than a few.
MAX_DEPTH = 100
_MERGE_TAG = "tag:yaml.org,2002:merge"

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _ManifestYamlLoader(_BaseLoader):
    """SafeLoader with YAML 1.2 booleans (true/false only)."""


_ManifestYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}
_ManifestYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    __import__("re").compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


@dataclass(frozen=True)
class LoadedManifest:
    """A valid manifest and where it came from."""

    path: Path
    content_hash: str
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.name


@dataclass
class DirectoryScan:
    """Result of reading a jobs directory: valid manifests by job name, problems by file."""

    valid: dict[str, LoadedManifest] = field(default_factory=dict)
    invalid: dict[Path, ManifestError] = field(default_factory=dict)
    hashes: dict[Path, str] = field(default_factory=dict)


def is_manifest_file(path: Path) -> bool:
    """Whether a file name is a manifest, leaving out editor temp, swap and backup files."""
    name = path.name
    if name.startswith((".", "#")) or name.endswith(("~", ".swp", ".swx", ".tmp", "#")):
        return False
    if name == "4913":  # vim's probe file when it checks that a directory is writable
        return False
    return name.endswith(MANIFEST_SUFFIXES)


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_permissions(path: Path, st: os.stat_result | None = None) -> None:
    """Refuse a file or directory that other users can write: manifests run commands.

    Group- or world-writable, or owned by someone other than this user or root, is refused,
    like sshd's StrictModes; the message says how to fix it.
    """
    st = st or path.stat()
    kind = "jobs directory" if stat.S_ISDIR(st.st_mode) else "manifest"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafePermissionsError(
            f"{path}: {kind} is writable by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"manifests run commands, so this is refused: run 'chmod go-w {path}'"
        )
    if st.st_uid not in (os.geteuid(), 0):
        raise UnsafePermissionsError(
            f"{path}: {kind} is owned by uid {st.st_uid}, not by this user ({os.geteuid()}) "
            "or root; manifests run commands, so this is refused"
        )


def load_manifest_bytes(path: Path, data: bytes) -> LoadedManifest:
    """Parse and validate one manifest's bytes; raise ManifestError with every problem found."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _single(path, line, 1, "", f"not UTF-8 text ({exc.reason})") from exc
    loader = _ManifestYamlLoader(text)
    try:
        try:
            _check_depth(text)
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            what = exc.problem or str(exc)
            mark = exc.problem_mark
            if mark is not None and _char_at(text, mark.line, mark.column) == "\t":
                what += " (a tab: YAML indents with spaces only)"
            ctx = exc.context_mark
            if (
                exc.context
                and ctx is not None
                and exc.problem_mark is not None
                and (ctx.line != exc.problem_mark.line)
            ):
                where = f"line {ctx.line + 1}, column {ctx.column + 1}"
                what += f" ({exc.context} that starts at {where})"
            if "expected a single document" in str(exc):
                what = "one YAML document per file; split the others into their own files"
            raise _single(path, line, col, "", f"YAML: {what}") from exc
        except yaml.YAMLError as exc:  # ReaderError (control characters) has no marks
            raise _yaml_problem(path, text, exc) from exc
        if node is None or (
            # '---' alone: a document whose content is an empty plain scalar (null)
            isinstance(node, yaml.ScalarNode) and node.value == "" and not node.style
        ):
            raise _single(path, 1, 1, "", "empty manifest; " + _expected_top())
        duplicate = _first_duplicate_key(node)
        if duplicate is not None:
            fld, first, second = duplicate
            raise _single(
                path,
                second.start_mark.line + 1,
                second.start_mark.column + 1,
                fld,
                f"duplicate key {second.value!r} (first given at line "
                f"{first.start_mark.line + 1}); each key may appear once in a mapping",
            )
        try:
            obj = loader.construct_document(node)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            raise _single(path, line, col, "", f"YAML: {exc.problem or exc}") from exc
        except yaml.YAMLError as exc:
            raise _yaml_problem(path, text, exc) from exc
    finally:
        loader.dispose()
    if not isinstance(node, yaml.MappingNode) or not isinstance(obj, dict):
        raise _single(
            path, node.start_mark.line + 1, node.start_mark.column + 1, "", _expected_top()
        )
    bad_keys = [k for k in obj if not isinstance(k, str)]
    if bad_keys:
        key_node = _key_node(node, bad_keys[0])
        mark = (key_node or node).start_mark
        raise _single(path, mark.line + 1, mark.column + 1, "", "field names must be text")
    kind = obj.get("kind")
    if "kind" not in obj:
        raise _single(
            path,
            node.start_mark.line + 1,
            node.start_mark.column + 1,
            "kind",
            f"required field 'kind' is missing; valid kinds: {', '.join(KINDS)}",
        )
    if kind not in KINDS:
        value_node = _value_node(node, "kind") or node
        raise _single(
            path,
            value_node.start_mark.line + 1,
            value_node.start_mark.column + 1,
            "kind",
            f"unknown kind {kind!r}; valid kinds: {', '.join(KINDS)}",
        )
    try:
        manifest = MANIFEST_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        raise ManifestError(_problems_from_validation(path, node, obj, exc)) from exc
    return LoadedManifest(path=path, content_hash=content_hash(data), manifest=manifest)


def load_manifest(path: Path, check_perms: bool = True) -> LoadedManifest:
    """Read and validate one manifest file."""
    try:
        st = path.stat()
        if check_perms:
            check_permissions(path, st)
        data = path.read_bytes()
    except UnsafePermissionsError as exc:
        raise _single(path, 1, 1, "", str(exc).split(": ", 1)[1]) from exc
    except OSError as exc:
        raise _single(path, 1, 1, "", f"cannot read: {exc.strerror or exc}") from exc
    return load_manifest_bytes(path, data)


def manifest_files(jobs_dir: Path) -> list[Path]:
    """The manifest files of a jobs directory, sorted by name (the order that decides which of
    two files claiming one job name wins)."""
    try:
        entries = list(os.scandir(jobs_dir))
    except FileNotFoundError:
        return []
    return sorted(Path(e.path) for e in entries if is_manifest_file(Path(e.name)) and e.is_file())


def scan_directory(
    jobs_dir: Path,
    cache: dict[Path, tuple[tuple[int, ...], LoadedManifest | ManifestError]] | None = None,
    check_perms: bool = True,
) -> DirectoryScan:
    """Read every manifest of a directory; files whose stat is unchanged come from ``cache``.

    The cache key holds the change time too: a rewrite that keeps size and modification time
    (``cp -p``, ``rsync -t``, ``touch -r``) still changes ``st_ctime``, which no user can set.

    Duplicate job names: the first file by name keeps the job, later ones get an error that
    names the first (the daemon applies last-known-good itself).
    """
    scan = DirectoryScan()
    seen: dict[str, Path] = {}
    paths = manifest_files(jobs_dir)
    if cache is not None:
        for stale in set(cache) - set(paths):
            del cache[stale]
    for path in paths:
        result: LoadedManifest | ManifestError
        try:
            st = path.stat()
        except FileNotFoundError:
            continue  # removed between listing and reading: the next scan settles it
        key = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_dev)
        cached = cache.get(path) if cache is not None else None
        if cached is not None and cached[0] == key and st.st_mode & 0o022 == 0:
            result = cached[1]
        else:
            try:
                result = load_manifest(path, check_perms=check_perms)
            except ManifestError as exc:
                result = exc
            if cache is not None:
                if time.time_ns() - st.st_ctime_ns >= _RACY_WINDOW_NS:
                    cache[path] = (key, result)
                else:
                    cache.pop(path, None)
        if isinstance(result, ManifestError):
            scan.invalid[path] = result
            continue
        scan.hashes[path] = result.content_hash
        first = seen.get(result.name)
        if first is not None:
            scan.invalid[path] = _single(
                path,
                *_name_position(path),
                "name",
                f"job name {result.name!r} is already defined in {first}; names must be unique",
            )
            continue
        seen[result.name] = path
        scan.valid[result.name] = result
    return scan


def validate_paths(paths: Iterable[Path]) -> tuple[list[LoadedManifest], list[ManifestProblem]]:
    """Validate files and directories (a directory means its manifest files); for `validate`."""
    loaded: list[LoadedManifest] = []
    problems: list[ManifestProblem] = []
    names: dict[str, Path] = {}
    for target in paths:
        files = manifest_files(target) if target.is_dir() else [target]
        if target.is_dir():
            try:
                check_permissions(target)
            except UnsafePermissionsError as exc:
                problems.append(ManifestProblem(target, 1, 1, "", str(exc).split(": ", 1)[1]))
        for path in files:
            try:
                item = load_manifest(path)
            except ManifestError as exc:
                problems.extend(exc.problems)
                continue
            if item.name in names:
                problems.append(
                    ManifestProblem(
                        path,
                        *_name_position(path),
                        "name",
                        f"job name {item.name!r} is already defined in "
                        f"{names[item.name]}; names must be unique",
                    )
                )
                continue
            names[item.name] = path
            loaded.append(item)
    return loaded, problems


def field_position(path: Path, loc: tuple[Any, ...]) -> tuple[int, int]:
    """Line and column (1-based) of the value at field path ``loc`` in a manifest file, for
    problems found after loading (e.g. a partition the cluster does not have)."""
    loader = _ManifestYamlLoader(path.read_text(encoding="utf-8"))
    try:
        root = loader.get_single_node()
    finally:
        loader.dispose()
    if root is None:
        return 1, 1
    node, _ = _locate(root, loc)
    return node.start_mark.line + 1, node.start_mark.column + 1


def _name_position(path: Path) -> tuple[int, int]:
    """Where a loaded manifest's ``name`` value is, for a clash with another file; 1:1 if the
    file changed under us and cannot be read again."""
    try:
        return field_position(path, ("name",))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return 1, 1


# --------------------------------------------------------------------------- positions


def _char_at(text: str, line: int, column: int) -> str:
    lines = text.splitlines()
    if 0 <= line < len(lines) and 0 <= column < len(lines[line]):
        return lines[line][column]
    return ""


def _expected_top() -> str:
    return (
        f"expected a mapping with apiVersion: {API_VERSION}, kind ({', '.join(KINDS)}), "
        "name and spec"
    )


def _yaml_problem(path: Path, text: str, exc: yaml.YAMLError) -> ManifestError:
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
    return _single(path, line, col, "", f"YAML: {what}")


class _TooDeepError(yaml.MarkedYAMLError):
    pass


def _check_depth(text: str) -> None:
    """Raise a marked YAML error where the nesting first goes deeper than MAX_DEPTH (the event
    stream is flat, so this pass cannot recurse)."""
    depth = 0
    for event in yaml.parse(text, Loader=_ManifestYamlLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _TooDeepError(
                    problem=f"nested more than {MAX_DEPTH} levels deep; "
                    "a manifest needs only a few",
                    problem_mark=event.start_mark,  # type: ignore[arg-type]  # libyaml's Mark
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _first_duplicate_key(
    root: yaml.Node,
) -> tuple[str, yaml.ScalarNode, yaml.ScalarNode] | None:
    """The first key given twice in one mapping (PyYAML keeps the last silently): its field
    path, the first key node and the repeated one. Merge keys (``<<``) may be overridden."""
    stack: list[tuple[yaml.Node, tuple[str, ...]]] = [(root, ())]
    seen_nodes: set[int] = set()
    while stack:
        node, where = stack.pop()
        if id(node) in seen_nodes:  # aliases share nodes, and may be recursive
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: dict[tuple[str, str], yaml.ScalarNode] = {}
            children = []
            for key, value in node.value:
                name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
                if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE_TAG:
                    first = keys.setdefault((key.tag, key.value), key)
                    if first is not key:
                        return ".".join((*where, name)), first, key
                children.append((value, (*where, name)))
            stack.extend(reversed(children))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(reversed([(v, (*where, str(i))) for i, v in enumerate(node.value)]))
    return None


def _single(path: Path, line: int, col: int, fld: str, message: str) -> ManifestError:
    return ManifestError([ManifestProblem(path, line, col, fld, message)])


def _key_node(node: yaml.MappingNode, key: Any) -> yaml.Node | None:
    for k, _ in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == str(key):
            return k
    return None


def _value_node(node: yaml.MappingNode, key: Any) -> yaml.Node | None:
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == str(key):
            return v
    return None


def _union_tags() -> dict[str, dict[str, Any]]:
    """Top-level fields that hold a tagged union, and each tag's model (None: not a model).
    Pydantic puts the tag in an error's location after the field name; it is not in the YAML."""
    from orchestrator.manifests import models

    return {
        "schedule": {
            "cron": models.CronSchedule,
            "every": models.EverySchedule,
            "on": models.ChangeSchedule,
        },
        "executor": {"local": None, "slurm": models.SlurmExecutor},
    }


def _field_path(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop the union tags Pydantic puts in an error location: the kind (``Command``) first,
    the form of a union field (``schedule``'s cron/every/on, ``executor``'s local/slurm) after
    its name, and validator wrappers."""
    tags = _union_tags()
    out: list[Any] = []
    parts = list(loc)
    if parts and parts[0] in KINDS:
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


def _locate(root: yaml.Node, loc: tuple[Any, ...]) -> tuple[yaml.Node, bool]:
    """Walk a field path down the node tree: the deepest node reached, and whether the
    whole path was found (a missing field stops at its parent mapping)."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            child = _value_node(node, part)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if part < len(node.value) else None
        else:
            child = None
        if child is None:
            return node, False
        node = child
    return node, True


def _problems_from_validation(
    path: Path, root: yaml.MappingNode, obj: dict[str, Any], exc: ValidationError
) -> list[ManifestProblem]:
    problems: list[ManifestProblem] = []
    seen: set[tuple[int, int, str]] = set()
    for err in exc.errors(include_url=False):
        loc = _field_path(tuple(err["loc"]))
        fld_parts = [str(p) for p in loc]
        node, _ = _locate(root, loc)
        if err["type"] == "extra_forbidden" and loc:
            parent, _ = _locate(root, loc[:-1])
            key = _key_node(parent, loc[-1]) if isinstance(parent, yaml.MappingNode) else None
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


_PATTERN_HINTS = {
    "mem": "memory is a number with an optional unit K, M, G or T: '4000', '4000M', '16G'",
    "array": "an array is task ids and ranges with an optional throttle: '0-99%10', '1,3,5-9:2'",
    "signal": "a signal is [B:|R:]NAME[@seconds], e.g. 'B:USR1@120'",
    "extra_args": "each extra sbatch argument is one '--option=value' or '--flag'",
    "account": "no whitespace allowed",
    "partition": "no whitespace allowed",
    "qos": "no whitespace allowed",
    "constraint": "no whitespace allowed",
    "output": "no whitespace allowed in the path",
    "source": "a mount path may not contain ':' (every runtime reads it as the separator)",
    "target": "a mount path may not contain ':' (every runtime reads it as the separator)",
    "error": "no whitespace allowed in the path",
}


def _message(err: Any, fld_parts: list[str]) -> str:
    kind = err["type"]
    msg: str = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind == "missing":
        return f"required field '{fld_parts[-1] if fld_parts else ''}' is missing"
    if fld_parts == ["executor"] and kind == "literal_error":
        return f"executor is 'local' or a mapping {{slurm: {{...}}}}, not {err['input']!r}"
    name = next((p for p in reversed(fld_parts) if not p.isdigit()), "")
    if kind == "string_pattern_mismatch" and name in _PATTERN_HINTS:
        return _PATTERN_HINTS[name]
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


def _valid_fields(loc: tuple[Any, ...]) -> list[str]:
    """The field names the model at ``loc`` accepts (for 'unknown field' hints)."""
    from orchestrator.manifests import models

    kinds = models.KIND_MODELS
    parts = list(loc)
    if not parts or parts[0] not in kinds:
        return []
    model: Any = kinds[parts.pop(0)]
    tags = _union_tags()
    for i, part in enumerate(_field_path(tuple(parts))):
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
