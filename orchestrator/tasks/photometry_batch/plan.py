"""From valid object rows to tasks (one per object and band), each checked before any runs.

A task's lists must be readable, hold rows of its band, and name images that exist; a task
that fails this is a problem and is not run, and the other tasks go on. Each runnable task
gets a fingerprint of what its result depends on (the lists' content, each image's and PSF
file's size and modification time, the object's position and the pipeline's settings): a task
whose fingerprint matches its last success is not measured again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator import atomic
from orchestrator.tasks.photometry_batch.objects import ObjectRow, Problem, expand
from orchestrator.tasks.photometry_batch.spec import PhotometryBatchSpec

MISSING_SHOWN = 3  # missing images named in a problem; the rest counted
PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class Task:
    """One object in one band: what ``photometry run`` gets, and its fingerprint."""

    key: str  # "<oid>_<band>": names its folder
    oid: str
    ra: float
    dec: float
    band: str
    templates: Path
    science: Path
    where: str
    fingerprint: str
    images: str = ""  # digest of the band and every image of both lists: equal = same images

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "templates": str(self.templates), "science": str(self.science)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Task:
        return cls(
            **{**data, "templates": Path(data["templates"]), "science": Path(data["science"])}
        )


def write_plan(
    run_dir: Path, tasks: list[Task], problems: list[Problem], groups: list[list[int]]
) -> Path:
    """``plan.json`` in the run's output folder: the tasks in order, the groups of tasks
    measured together (an array task's index is its group's place), and the problems, so that
    every process of the run sees one plan."""
    path = run_dir / PLAN_FILE
    data = {
        "tasks": [t.to_json() for t in tasks],
        "groups": groups,
        "problems": [asdict(p) for p in problems],
    }
    atomic.write_json(path, data, 0o644, indent=1)
    return path


def read_plan(run_dir: Path) -> tuple[list[Task], list[Problem], list[list[int]]]:
    data = json.loads((run_dir / PLAN_FILE).read_text())
    tasks = [Task.from_json(t) for t in data["tasks"]]
    groups = data.get("groups") or [[i] for i in range(len(tasks))]
    return tasks, [Problem(**p) for p in data["problems"]], groups


def plan(
    rows: list[ObjectRow], spec: PhotometryBatchSpec, table: Path | None
) -> tuple[list[Task], list[Problem]]:
    """Every (object, band) as a task, or a problem saying why it cannot run."""
    tasks: list[Task] = []
    problems: list[Problem] = []
    # what a result depends on; the builtin pipeline's alone keeps the fingerprints of batches
    # written before phrosty could be chosen
    pipeline = spec.pipeline
    # grouping changes the cutout, not what a light curve means: not part of the fingerprint
    builtin = pipeline.builtin.model_dump(exclude={"group"})
    settings = {**pipeline.model_dump(), "builtin": builtin} if pipeline.phrosty else builtin
    for row in rows:
        for band in row.bands:
            try:
                tasks.append(_task(row, band, spec, table, settings))
            except _TaskProblem as exc:
                problems.append(Problem(row.where, str(exc), row.entry.oid, band))
    return tasks, problems


class _TaskProblem(Exception):
    pass


def _task(
    row: ObjectRow,
    band: str,
    spec: PhotometryBatchSpec,
    table: Path | None,
    settings: dict[str, Any],
) -> Task:
    from orchestrator.dia.io import ListFormatError, read_list

    entry = row.entry
    lists: dict[str, Path] = {}
    images: list[Path] = []
    # phrosty's lists name images relative to its image collection's root: checked on this
    # host only where pipeline.phrosty.images_root says where that is
    phrosty = spec.pipeline.phrosty
    base = None
    if phrosty is not None and phrosty.images_root is not None:
        base = Path(expand(phrosty.images_root))
    check_images = phrosty is None or base is not None
    for which in ("templates", "science"):
        pattern = getattr(entry, which) or getattr(spec, which)
        assert pattern is not None  # read_objects left such rows out
        path = Path(expand(pattern.format(oid=entry.oid, band=band)))
        if not path.is_absolute():
            if table is None:
                raise _TaskProblem(
                    f"{which} list {str(path)!r} is relative, and inline objects have no "
                    "table folder to read it against: write an absolute path"
                )
            path = table.parent / path
        try:
            exposures = read_list(path, band, base_path=base)
        except ListFormatError as exc:
            raise _TaskProblem(f"band {band}: {exc}") from None
        if not exposures:
            raise _TaskProblem(f"band {band}: {path} has no rows of band {band}")
        lists[which] = path
        if not check_images:
            continue
        for e in exposures:
            images.append(e.path)
            if e.psf_path is not None:
                images.append(e.psf_path)
    missing = [p for p in dict.fromkeys(images) if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:MISSING_SHOWN])
        more = f" and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else ""
        raise _TaskProblem(f"band {band}: missing image(s) {shown}{more}")
    fingerprint = _fingerprint(entry.ra, entry.dec, band, lists, images, settings)
    same = hashlib.sha256("\0".join([band, *sorted({str(i) for i in images})]).encode())
    return Task(
        key=f"{entry.oid}_{band}",
        oid=entry.oid,
        ra=entry.ra,
        dec=entry.dec,
        band=band,
        templates=lists["templates"],
        science=lists["science"],
        where=row.where,
        fingerprint=fingerprint,
        images=same.hexdigest() if check_images else "",
    )


def _fingerprint(
    ra: float,
    dec: float,
    band: str,
    lists: dict[str, Path],
    images: list[Path],
    settings: dict[str, Any],
) -> str:
    digest = hashlib.sha256()
    head = {"ra": ra, "dec": dec, "band": band, "settings": settings}
    digest.update(json.dumps(head, sort_keys=True).encode())
    for which in sorted(lists):
        digest.update(which.encode())
        digest.update(lists[which].read_bytes())
    for image in sorted(set(images)):
        st = image.stat()
        digest.update(f"{image}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()
