"""A truth table (the true transient flux per science image), for the plot and for checks.

Format: a CSV with at least the columns ``science_path`` (relative to the CSV's folder, or
absolute), ``true_flux`` (in the science image's units) and ``zpt`` (that image's AB zero point),
as ``orchestrator photometry simulate`` writes ``truth.csv``; other columns are ignored.

``photometry run --truth FILE`` reads one; with ``--object object.json`` a ``truth.csv`` beside
the object file is read by default, since ``photometry simulate`` writes the two together and a
user running the demo wants to see the truth without knowing the flag. A light-curve row is
matched to the truth row of the same science image (paths compared after resolving); rows
without a match have no truth, which is fine (a truth table may cover only some epochs).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.dia.errors import DiaInputError
from orchestrator.dia.pipeline.calibrate import njy_per_count

TRUTH_COLUMNS = ("science_path", "true_flux", "zpt")
DEFAULT_TRUTH_NAME = "truth.csv"


class TruthFormatError(DiaInputError):
    """A truth table cannot be read or lacks what it needs; the message names the file and line."""


@dataclass(frozen=True)
class TruthRow:
    science_path: Path  # resolved
    true_flux: float  # in the science image's units
    zpt: float  # AB zero point of those units

    @property
    def true_flux_njy(self) -> float:
        return self.true_flux * njy_per_count(self.zpt)


@dataclass(frozen=True)
class TruthTable:
    path: Path
    rows: dict[Path, TruthRow]  # keyed by the resolved science path

    def match(self, science_path: str | Path) -> TruthRow | None:
        """The truth of the science image at ``science_path``, or None."""
        return self.rows.get(Path(science_path).resolve())


def default_truth_path(object_file: Path | None) -> Path | None:
    """``truth.csv`` beside ``object_file`` when it exists (``photometry simulate`` writes both)."""
    if object_file is None:
        return None
    candidate = Path(object_file).parent / DEFAULT_TRUTH_NAME
    return candidate if candidate.is_file() else None


def read_truth(path: Path) -> TruthTable:
    """Read a truth table; raises :class:`TruthFormatError` naming the file (and line, field)."""
    path = Path(path)
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in TRUTH_COLUMNS if c not in header]
            if missing:
                raise TruthFormatError(
                    f"{path}: the truth table lacks the column(s) {', '.join(missing)} "
                    f"(a CSV with a header naming {', '.join(TRUTH_COLUMNS)}, as "
                    "`photometry simulate` writes truth.csv)"
                )
            records = [(reader.line_num, rec) for rec in reader]
    except OSError as exc:
        raise TruthFormatError(
            f"{path}: cannot read the truth table: {exc.strerror or exc}"
        ) from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise TruthFormatError(f"{path}: not a CSV truth table: {exc}") from exc
    if not records:
        raise TruthFormatError(f"{path}: the truth table has a header but no rows")
    root = path.resolve().parent
    rows: dict[Path, TruthRow] = {}
    seen: dict[Path, int] = {}
    for line, rec in records:
        where = f"{path}:{line}"
        rel = (rec.get("science_path") or "").strip()
        if not rel:
            raise TruthFormatError(f"{where}: science_path is empty")
        science = (root / rel).resolve()
        if science in seen:
            raise TruthFormatError(
                f"{where}: science_path {rel} appears again (first at line {seen[science]})"
            )
        seen[science] = line
        rows[science] = TruthRow(
            science,
            _number(rec, "true_flux", where),
            _number(rec, "zpt", where, finite=True),
        )
    return TruthTable(path, rows)


def _number(rec: dict[str, Any], field: str, where: str, finite: bool = False) -> float:
    text = (rec.get(field) or "").strip()
    try:
        value = float(text)
    except ValueError:
        raise TruthFormatError(f"{where}: {field} must be a number, got {text!r}") from None
    if finite and not math.isfinite(value):
        raise TruthFormatError(f"{where}: {field} must be finite, got {text!r}")
    return value
