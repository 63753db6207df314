"""The object table of a batch: CSV, Parquet, a YAML list, or the manifest's inline list.

Each row is checked alone: a row that is not valid (a missing column value, an oid that is not
a plain name, a declination out of range) or an oid seen before is a problem naming the file
and line (the row number in a Parquet file), and the other rows go on. Columns other than
``oid``, ``ra``, ``dec``, ``band``, ``templates`` and ``science`` are left alone: an object
table often carries more (a redshift, a peak date).
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchestrator.tasks.photometry_batch.spec import ObjectEntry, PhotometryBatchSpec

COLUMNS = ("oid", "ra", "dec", "band", "templates", "science")
REQUIRED = ("oid", "ra", "dec")
_DEFAULTED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):-([^}]*)\}")


class BatchInputError(Exception):
    """The batch as a whole cannot start (its table cannot be read); one line, for the log."""


@dataclass(frozen=True)
class ObjectRow:
    """One valid row: the object, its bands, its lists (None: the spec's), and where it is."""

    entry: ObjectEntry
    bands: tuple[str, ...]
    where: str  # "objects.csv:4", "objects.parquet row 3", "spec.objects[2]"


@dataclass(frozen=True)
class Problem:
    """A row, object or task that is left out, and why."""

    where: str
    message: str
    oid: str | None = None
    band: str | None = None

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def expand(value: str) -> str:
    """``~``, ``$VAR``, ``${VAR}`` and ``${VAR:-default}``; an unset variable is an error."""
    text = _DEFAULTED.sub(lambda m: os.environ.get(m.group(1)) or m.group(2), value)
    text = os.path.expandvars(os.path.expanduser(text))
    if "$" in text:
        raise BatchInputError(
            f"{value!r}: a variable in it is not set in the task's environment (expanded to "
            f"{text!r}); set it for the daemon or write the path out"
        )
    return os.path.expanduser(text)


def read_objects(spec: PhotometryBatchSpec) -> tuple[list[ObjectRow], list[Problem], Path | None]:
    """The valid rows, a problem per row left out, and the table's path (None: inline)."""
    if isinstance(spec.objects, list):
        raw = [(f"spec.objects[{i}]", e.model_dump()) for i, e in enumerate(spec.objects)]
        table = None
    else:
        table = Path(expand(spec.objects))
        if not table.is_absolute():
            raise BatchInputError(
                f"spec.objects {spec.objects!r} is relative; write an absolute path (a task "
                "runs in its run directory, not beside its manifest)"
            )
        raw = _read_table(table)
    rows: list[ObjectRow] = []
    problems: list[Problem] = []
    first_seen: dict[str, str] = {}
    for where, record in raw:
        row = _valid_row(where, record, spec, problems)
        if row is None:
            continue
        oid = row.entry.oid
        if oid in first_seen:
            problems.append(Problem(where, f"oid {oid} appears again (first at {first_seen[oid]})"))
            continue
        first_seen[oid] = where
        rows.append(row)
    return rows, problems, table


def _valid_row(
    where: str, record: dict[str, Any], spec: PhotometryBatchSpec, problems: list[Problem]
) -> ObjectRow | None:
    values = {k: v for k, v in record.items() if k in COLUMNS and v not in (None, "")}
    missing = [c for c in REQUIRED if c not in values]
    oid = str(values.get("oid", "")) or None
    if missing:
        problems.append(Problem(where, f"no {', '.join(missing)}", oid))
        return None
    try:
        entry = ObjectEntry.model_validate(values)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'row'}: {err['msg']}" for err in exc.errors()
        )
        problems.append(Problem(where, reasons, oid))
        return None
    for which in ("templates", "science"):
        if getattr(entry, which) is None and getattr(spec, which) is None:
            problems.append(
                Problem(
                    where, f"no {which} list: the row has none and spec.{which} is not set", oid
                )
            )
            return None
    return ObjectRow(entry, tuple(entry.band or spec.bands), where)


def _read_table(path: Path) -> list[tuple[str, dict[str, Any]]]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return _read_parquet(path)
        if suffix in (".yaml", ".yml"):
            return _read_yaml(path)
        return _read_csv(path)
    except OSError as exc:
        raise BatchInputError(
            f"{path}: cannot read the object table: {exc.strerror or exc}"
        ) from exc


def _read_csv(path: Path) -> list[tuple[str, dict[str, Any]]]:
    with path.open(newline="") as fh:
        # comment and blank lines dropped, each kept line with its number in the file
        kept = [
            (n, line)
            for n, line in enumerate(fh, start=1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
    if not kept:
        raise BatchInputError(f"{path}: empty object table (expected a header: oid,ra,dec,...)")
    numbers = [n for n, _ in kept]
    reader = csv.DictReader(line for _, line in kept)
    header = [h.strip() for h in reader.fieldnames or []]
    absent = [c for c in REQUIRED if c not in header]
    if absent:
        raise BatchInputError(
            f"{path}:{numbers[0]}: the header names no {', '.join(absent)} column "
            f"(it has: {', '.join(header)})"
        )
    out = []
    for i, record in enumerate(reader, start=1):
        clean = {(k or "").strip(): (v or "").strip() for k, v in record.items() if k}
        out.append((f"{path}:{numbers[i]}", clean))
    return out


def _read_parquet(path: Path) -> list[tuple[str, dict[str, Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise BatchInputError(
            f"{path}: reading Parquet needs pyarrow (pip install 'orchestrator[photometry]')"
        ) from exc
    try:
        records = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises its own ArrowInvalid and OSError
        raise BatchInputError(f"{path}: not a readable Parquet table: {exc}") from exc
    return [(f"{path} row {i}", dict(r)) for i, r in enumerate(records, start=1)]


def _read_yaml(path: Path) -> list[tuple[str, dict[str, Any]]]:
    import yaml

    try:
        root = yaml.compose(path.read_text(), Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise BatchInputError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(root, yaml.SequenceNode):
        raise BatchInputError(f"{path}: expected a list of objects (mappings with oid, ra, dec)")
    out: list[tuple[str, dict[str, Any]]] = []
    for node in root.value:
        where = f"{path}:{node.start_mark.line + 1}"
        value = yaml.safe_load(yaml.serialize(node))
        out.append((where, value if isinstance(value, dict) else {"_not_a_mapping": value}))
    return out
