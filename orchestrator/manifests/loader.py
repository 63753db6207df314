"""YAML manifests -> validated models, with every problem positioned as ``path:line:col``.

The entry points the daemon, the command line and the tests use. The work is split by seam:

- ``limits.py``: the documented bounds (size, depth, expansion), checked before building;
- ``reading.py``: reading files safely (regular files only, size cap, deadline, permissions);
- ``positions.py``: the YAML loader and walking field paths to line and column;
- ``messages.py``: Pydantic errors -> messages that say what would be valid;
- ``document.py``: one file's bytes -> a LoadedManifest;
- ``references.py``: names across files (who keeps a name, dangling after/requires);
- ``scan.py``: a whole jobs directory, with a stat cache and a settle time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path

from orchestrator.errors import ManifestError, ManifestProblem, UnsafePermissionsError
from orchestrator.manifests.document import (
    LoadedManifest,
    content_hash,
    field_position,
    load_manifest,
    load_manifest_bytes,
)
from orchestrator.manifests.limits import (
    MAX_DEPTH,
    MAX_MANIFEST_BYTES,
    MAX_NODES,
    MAX_SCALAR_CHARS,
)
from orchestrator.manifests.positions import ManifestYamlLoader
from orchestrator.manifests.reading import (
    READ_TIMEOUT_S,
    JobsDirUnreadableError,
    check_permissions,
)
from orchestrator.manifests.references import reference_problems, resolve_names
from orchestrator.manifests.scan import (
    DEFAULT_SETTLE_S,
    MANIFEST_SUFFIXES,
    DirectoryScan,
    ScanCache,
    is_manifest_file,
    manifest_files,
    scan_directory,
)

# The YAML loader under its old private name (tests and tools parse with it).
_ManifestYamlLoader = ManifestYamlLoader

__all__ = [
    "DEFAULT_SETTLE_S",
    "MANIFEST_SUFFIXES",
    "MAX_DEPTH",
    "MAX_MANIFEST_BYTES",
    "MAX_NODES",
    "MAX_SCALAR_CHARS",
    "READ_TIMEOUT_S",
    "DirectoryScan",
    "JobsDirUnreadableError",
    "LoadedManifest",
    "ManifestYamlLoader",
    "ScanCache",
    "check_permissions",
    "content_hash",
    "field_position",
    "is_manifest_file",
    "load_manifest",
    "load_manifest_bytes",
    "manifest_files",
    "scan_directory",
    "validate_paths",
]


def validate_paths(paths: Iterable[Path]) -> tuple[list[LoadedManifest], list[ManifestProblem]]:
    """Validate files and directories (a directory means its manifest files); for `validate`.

    Names in ``after``/``requires`` are looked up among every manifest validated and, for a
    file given alone, the other manifests of its directory (the jobs it will run beside).
    Returns the valid manifests and every problem, grouped by file in the order read.
    """
    order: list[Path] = []
    loaded: list[LoadedManifest] = []
    problems: dict[Path, list[ManifestProblem]] = {}
    neighbours: set[Path] = set()
    for target in paths:
        for path in _files_of(target, problems, neighbours):
            if path in order:
                continue  # given twice (a directory and a file in it): one job, not a clash
            order.append(path)
            try:
                loaded.append(load_manifest(path))
            except ManifestError as exc:
                problems.setdefault(path, []).extend(exc.problems)
    claims = resolve_names(loaded)
    for path, problem in claims.losers.items():
        problems.setdefault(path, []).append(problem)
    known_kinds: dict[str, str | None] = {n: lm.manifest.kind for n, lm in claims.winners.items()}
    for path in sorted(neighbours - set(order)):
        try:
            other = load_manifest(path)
        except ManifestError:
            continue  # not validated here: only the names of the valid ones count
        known_kinds.setdefault(other.name, other.manifest.kind)
    valid: list[LoadedManifest] = []
    for item in claims.winners.values():
        dangling = reference_problems(item, known_kinds)
        if dangling:
            problems.setdefault(item.path, []).extend(dangling)
        else:
            valid.append(item)
    rank = {p: i for i, p in enumerate(order)}
    flat = [p for path in sorted(problems, key=lambda p: rank.get(p, -1)) for p in problems[path]]
    valid.sort(key=lambda lm: rank[lm.path])
    return valid, flat


def _files_of(
    target: Path, problems: dict[Path, list[ManifestProblem]], neighbours: set[Path]
) -> list[Path]:
    """The manifest files ``target`` means (a directory's, or the file itself); problems of
    the directory go to ``problems``, and a file's directory neighbours to ``neighbours``."""
    if not target.is_dir():
        # A directory that does not answer: the file's own read says so.
        with contextlib.suppress(JobsDirUnreadableError):
            neighbours.update(manifest_files(target.parent))
        return [target]
    try:
        check_permissions(target)
    except UnsafePermissionsError as exc:
        problems.setdefault(target, []).append(
            ManifestProblem(target, 1, 1, "", str(exc).split(": ", 1)[1])
        )
    try:
        return manifest_files(target)
    except JobsDirUnreadableError as exc:
        problems.setdefault(target, []).append(
            ManifestProblem(target, 1, 1, "", str(exc).split(": ", 1)[1])
        )
        return []
