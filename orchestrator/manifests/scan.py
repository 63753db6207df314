"""Reading a jobs directory: which files are manifests, each file's result (from a stat cache
where unchanged), who keeps each job name, dangling ``after``/``requires`` names, and which
problems are too young to report.

Safe to call from a worker thread: the only mutable state it touches is the ``cache`` dict its
caller passes in (and reading.py's lock-guarded registry of stuck reads). It never blocks for
long: every file system call runs under reading.py's deadline.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import ManifestError, ManifestProblem
from orchestrator.manifests.document import LoadedManifest, load_manifest_bytes
from orchestrator.manifests.reading import READ_TIMEOUT_S, list_directory, read_manifest_file
from orchestrator.manifests.references import reference_problems, resolve_names

MANIFEST_SUFFIXES = (".yaml", ".yml")
# A file changed this recently may change again without its stat changing (time stamps are
# coarse: a kernel tick, or a second on some file systems), so its parse is not cached yet;
# git calls these index entries "racily clean".
_RACY_WINDOW_NS = 2_000_000_000
# How long a file must have been left alone before its problems are reported (issue 8: a
# manifest copied in two writes by a slow scp, or over NFS, was reported invalid when only its
# first half had arrived). The daemon's default; scan_directory's own default is 0 (report at
# once), which is what `validate` wants.
DEFAULT_SETTLE_S = 2.0

ScanCache = dict[Path, tuple[tuple[int, ...], LoadedManifest | ManifestError]]


@dataclass
class DirectoryScan:
    """Result of reading a jobs directory.

    ``valid``: job name -> the manifest that defines it. ``invalid``: file -> its problems.
    ``unsettled``: file -> epoch time (``time.time()``) at which it will have been left alone
    for the settle time: the file is invalid now but changed too recently for that to be
    reported; scan again at that time (a known job's last valid version stays in effect
    meanwhile). ``hashes``: file -> content hash, for every file that loaded.
    """

    valid: dict[str, LoadedManifest] = field(default_factory=dict)
    invalid: dict[Path, ManifestError] = field(default_factory=dict)
    unsettled: dict[Path, float] = field(default_factory=dict)
    hashes: dict[Path, str] = field(default_factory=dict)


def is_manifest_file(path: Path) -> bool:
    """Whether a file name is a manifest, leaving out editor temp, swap and backup files."""
    name = path.name
    if name.startswith((".", "#")) or name.endswith(("~", ".swp", ".swx", ".tmp", "#")):
        return False
    if name == "4913":  # vim's probe file when it checks that a directory is writable
        return False
    return name.endswith(MANIFEST_SUFFIXES)


def manifest_files(jobs_dir: Path, timeout_s: float = READ_TIMEOUT_S) -> list[Path]:
    """The manifest names of a jobs directory, sorted by name (the order that decides which of
    two new files claiming one job name wins), whatever each entry is: a directory, a FIFO or a
    dangling link named ``x.yaml`` is reported by reading it, not left out unseen.

    Raises JobsDirUnreadableError when the directory does not answer within ``timeout_s``."""
    names = list_directory(jobs_dir, timeout_s)
    return sorted(jobs_dir / n for n in names if is_manifest_file(Path(n)))


def scan_directory(
    jobs_dir: Path,
    cache: ScanCache | None = None,
    check_perms: bool = True,
    owners: Mapping[str, Path] | None = None,
    settle_s: float = 0.0,
    now: float | None = None,
    read_timeout_s: float = READ_TIMEOUT_S,
) -> DirectoryScan:
    """Read every manifest of a directory; files whose stat is unchanged come from ``cache``.

    ``owners``: job name -> the file that holds it now (the daemon's jobs). That file keeps
    the name against newcomers, also while it is invalid; see references.py. ``settle_s`` and
    ``now`` (epoch seconds, default ``time.time()``): a file whose problems are found while it
    changed less than ``settle_s`` ago goes to ``unsettled`` instead of ``invalid``. A file
    changed "in the future" by more than ``settle_s`` (a skewed NFS clock) counts as settled,
    so that it cannot stay unreported.

    Raises JobsDirUnreadableError when the directory cannot be listed in time; the caller
    must keep its current jobs (an empty scan would remove them all).
    """
    now_s = time.time() if now is None else now
    scan = DirectoryScan()
    paths = manifest_files(jobs_dir, read_timeout_s)
    if cache is not None:
        for stale in set(cache) - set(paths):
            del cache[stale]
    results: dict[Path, LoadedManifest | ManifestError] = {}
    changed_at_s: dict[Path, float] = {}
    for path in paths:
        read = _read_one(path, cache, check_perms, read_timeout_s)
        if read is None:
            continue  # removed between listing and reading: the next scan settles it
        results[path], changed = read
        if changed is not None:
            changed_at_s[path] = changed

    loaded = [r for r in results.values() if isinstance(r, LoadedManifest)]
    for item in loaded:
        scan.hashes[item.path] = item.content_hash
    problems: dict[Path, list[ManifestProblem]] = {
        p: list(r.problems) for p, r in results.items() if isinstance(r, ManifestError)
    }
    scan.valid = _valid_by_name(loaded, owners, problems)
    for path, found in problems.items():
        changed = changed_at_s.get(path)
        if changed is not None and settle_s > 0 and now_s - settle_s < changed <= now_s + settle_s:
            scan.unsettled[path] = changed + settle_s
        else:
            scan.invalid[path] = ManifestError(found)
    return scan


def _valid_by_name(
    loaded: list[LoadedManifest],
    owners: Mapping[str, Path] | None,
    problems: dict[Path, list[ManifestProblem]],
) -> dict[str, LoadedManifest]:
    """Who holds each job name, and which of them name only jobs that exist; the others'
    problems go to ``problems``."""
    # Files whose names stay reserved for them: invalid now, whether reported or not yet.
    claims = resolve_names(loaded, owners, invalid_paths=list(problems))
    for path, problem in claims.losers.items():
        problems.setdefault(path, []).append(problem)
    known_kinds: dict[str, str | None] = {n: lm.manifest.kind for n, lm in claims.winners.items()}
    for name, path in (owners or {}).items():
        if path in problems and name not in known_kinds:
            known_kinds[name] = None  # held by an invalid file: exists, kind unknown
    valid: dict[str, LoadedManifest] = {}
    for name, item in claims.winners.items():
        dangling = reference_problems(item, known_kinds)
        if dangling:
            problems[item.path] = dangling
        else:
            valid[name] = item
    return valid


def _read_one(
    path: Path, cache: ScanCache | None, check_perms: bool, timeout_s: float
) -> tuple[LoadedManifest | ManifestError, float | None] | None:
    """One file's result (cached when its stat is unchanged and it is not racily new) and
    when it last changed; None when it is gone."""
    cached = cache.get(path) if cache is not None else None
    read = read_manifest_file(
        path,
        check_perms=check_perms,
        known_key=cached[0] if cached is not None else None,
        timeout_s=timeout_s,
    )
    if read.gone:
        if cache is not None:
            cache.pop(path, None)
        return None
    result: LoadedManifest | ManifestError
    if read.error is not None:
        result = read.error
    elif read.data is None:  # unchanged since cached
        assert cached is not None
        return cached[1], read.changed_at_s
    else:
        try:
            result = load_manifest_bytes(path, read.data)
        except ManifestError as exc:
            result = exc
    if cache is not None:
        key = read.key
        if (
            key is not None
            and read.st is not None
            and (time.time_ns() - read.st.st_ctime_ns >= _RACY_WINDOW_NS)
        ):
            cache[path] = (key, result)
        else:
            cache.pop(path, None)
    return result, read.changed_at_s
