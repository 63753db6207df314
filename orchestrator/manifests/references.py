"""What one manifest says about others: job names (unique across files) and the names in
``after`` and ``requires``. Pure functions over loaded manifests, used by the daemon's scan and
by ``validate`` alike.

Who keeps a name that two files claim (issue 8): the file that holds it now (``owners``, from
the daemon) keeps it, whatever the file names' sort order, and also while that file is invalid
and its last valid version is in effect; otherwise the first file by name. A newcomer never
takes a running job over.

A dangling ``after``/``requires`` name (no such job), or a job naming itself (it would trigger
itself after every success, forever), makes the manifest that holds it invalid, like any other
invalid field, rather than being kept with a warning: ``after: [typo]`` would silently never
run, and an invalid manifest is what ``validate``'s exit status and the daemon's status already
report. A job already running keeps its last valid version meanwhile, as for every invalid
edit. The names counted as existing are the valid manifests' and the names still held by
invalid files (``owners``), so that one file's typo does not cascade into its dependants.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import ManifestProblem
from orchestrator.manifests.document import LoadedManifest

_NAMES_SHOWN = 20


@dataclass(frozen=True)
class NameClaims:
    """Which file keeps each job name, and the problem of every file that loses one."""

    winners: dict[str, LoadedManifest]
    losers: dict[Path, ManifestProblem]


def resolve_names(
    loaded: Iterable[LoadedManifest],
    owners: Mapping[str, Path] | None = None,
    invalid_paths: Iterable[Path] = (),
) -> NameClaims:
    """Give each job name to one file.

    ``loaded`` in the order that breaks ties (file name order); ``owners``: job name -> the file
    that holds it now; ``invalid_paths``: files present but invalid (or not settled yet), whose
    owned names stay reserved for them.
    """
    owners = owners or {}
    invalid = set(invalid_paths)
    claims: dict[str, list[LoadedManifest]] = {}
    for item in loaded:
        claims.setdefault(item.name, []).append(item)
    winners: dict[str, LoadedManifest] = {}
    losers: dict[Path, ManifestProblem] = {}
    for name, items in claims.items():
        owner = owners.get(name)
        holder = next((i for i in items if i.path == owner), None)
        if holder is not None:
            winners[name] = holder
            held_by = f"already defined in {owner}"
        elif owner is not None and owner in invalid:
            held_by = (
                f"held by {owner}, whose last valid version is in effect (that file has an "
                "error now)"
            )
        else:
            winners[name] = holder = items[0]
            held_by = f"already defined in {holder.path}"
        for item in items:
            if item is holder:
                continue
            line, col = item.position("name")
            losers[item.path] = ManifestProblem(
                item.path,
                line,
                col,
                "name",
                f"job name {name!r} is {held_by}; names must be unique",
            )
    return NameClaims(winners, losers)


def reference_problems(
    item: LoadedManifest, known_kinds: Mapping[str, str | None]
) -> list[ManifestProblem]:
    """Problems with the names in ``item``'s ``after`` and ``requires``, each at its entry.

    ``known_kinds``: job name -> its kind, for every job that exists (None where the kind is
    not known, e.g. a name held by an invalid file: then any use of it is accepted).
    """
    manifest = item.manifest
    problems: list[ManifestProblem] = []
    for fld in ("after", "requires"):
        for i, name in enumerate(getattr(manifest, fld)):
            # Any kind may be named in `requires`: a job that writes a `valid_until` result (a
            # Command wrapping a site's own token tool) is as good as AliEnToken.
            if name == manifest.name:
                message = f"a job cannot name itself in '{fld}'"
            elif name not in known_kinds:
                message = f"no job named {name!r}; {_known(known_kinds)}"
            else:
                continue
            line, col = item.position(f"{fld}.{i}")
            problems.append(ManifestProblem(item.path, line, col, f"{fld}.{i}", message))
    return problems


def _known(known_kinds: Mapping[str, str | None]) -> str:
    names = sorted(known_kinds)
    if not names:
        return "there are no other jobs"
    shown = ", ".join(names[:_NAMES_SHOWN])
    more = f" and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else ""
    return f"known jobs: {shown}{more}"
