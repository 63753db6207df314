"""The object table of a PhotometryBatch: each bad row reported with file and line, the others
kept; list patterns and paths checked before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from orchestrator.manifests.models import validate_manifest
from orchestrator.tasks.photometry_batch.objects import BatchInputError, expand, read_objects
from orchestrator.tasks.photometry_batch.spec import PhotometryBatchSpec


def spec(objects: object, **extra: object) -> PhotometryBatchSpec:
    return PhotometryBatchSpec.model_validate(
        {"objects": objects, "templates": "{oid}/t.txt", "science": "{oid}/s.txt", **extra}
    )


def test_bad_csv_rows_are_reported_by_line_and_the_rest_kept(tmp_path: Path) -> None:
    """A missing declination, one out of range, a bad oid and a repeated oid are four problems
    at their own lines (comments and blank lines counted); extra columns are ignored."""
    table = tmp_path / "objects.csv"
    table.write_text(
        "# Roman SNe, December\n"
        "oid,ra,dec,band,redshift\n"
        "snA,10.5,-44.0,R062,0.3\n"
        "snB,10.6,,R062,0.4\n"
        "\n"
        "snC,10.7,-95.0,R062,0.5\n"
        "sn D,10.8,-44.1,R062,0.1\n"
        "snA,10.9,-44.2,F184,0.3\n"
        "snE,11.0,-44.3,R062 F184,0.2\n"
    )
    rows, problems, where = read_objects(spec(str(table)))
    assert where == table
    assert [(r.entry.oid, r.bands, r.where) for r in rows] == [
        ("snA", ("R062",), f"{table}:3"),
        ("snE", ("R062", "F184"), f"{table}:9"),
    ]
    text = [str(p) for p in problems]
    assert text[0] == f"{table}:4: no dec"
    assert text[1].startswith(f"{table}:6: dec: Input should be greater than or equal to -90")
    assert text[2].startswith(f"{table}:7: oid: String should match pattern")
    assert text[3] == f"{table}:8: oid snA appears again (first at {table}:3)"


def test_yaml_and_parquet_tables_name_their_lines_and_rows(tmp_path: Path) -> None:
    """A YAML list names the line of each bad item; a Parquet table its row number."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    yaml_table = tmp_path / "objects.yaml"
    yaml_table.write_text("- {oid: snA, ra: 1, dec: 2}\n- oid: snB\n  ra: 400\n  dec: 0\n- 7\n")
    rows, problems, _ = read_objects(spec(str(yaml_table)))
    assert [r.entry.oid for r in rows] == ["snA"]
    assert str(problems[0]).startswith(f"{yaml_table}:2: ra: Input should be less than 360")
    assert str(problems[1]) == f"{yaml_table}:5: no oid, ra, dec"
    parquet = tmp_path / "objects.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            [{"oid": "snA", "ra": 1.0, "dec": 2.0}, {"oid": "snB", "ra": 1.0, "dec": None}]
        ),
        parquet,
    )
    rows, problems, _ = read_objects(spec(str(parquet)))
    assert [r.entry.oid for r in rows] == ["snA"]
    assert [str(p) for p in problems] == [f"{parquet} row 2: no dec"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty object table"),
        ("name,ra,dec\nsnA,1,2\n", ":1: the header names no oid column"),
    ],
)
def test_an_unusable_table_stops_the_batch_with_one_line(
    tmp_path: Path, text: str, message: str
) -> None:
    """A table with no header or without a required column is one clear error, not per row."""
    table = tmp_path / "objects.csv"
    table.write_text(text)
    with pytest.raises(BatchInputError, match=message):
        read_objects(spec(str(table)))
    with pytest.raises(BatchInputError, match="cannot read the object table"):
        read_objects(spec(str(tmp_path / "absent.csv")))
    with pytest.raises(BatchInputError, match="is relative"):
        read_objects(spec("objects.csv"))


def test_manifest_errors_name_the_field() -> None:
    """Inline objects without lists, a list pattern naming an unknown field and a repeated
    inline oid are manifest errors (validate reports them before any run)."""
    base = {"apiVersion": "orchestrator/v1", "kind": "PhotometryBatch", "name": "b"}
    with pytest.raises(ValidationError, match=r"objects\[0\] \(snA\) has no templates list"):
        validate_manifest({**base, "spec": {"objects": [{"oid": "snA", "ra": 1, "dec": 2}]}})
    with pytest.raises(ValidationError, match=r"names \{field\}; a list path may name only"):
        validate_manifest({**base, "spec": {"objects": "/x.csv", "templates": "{oid}/{field}.txt"}})
    twice = [{"oid": "a", "ra": 1, "dec": 2}] * 2
    with pytest.raises(ValidationError, match="oid 'a' appears twice"):
        validate_manifest({**base, "spec": {"objects": twice, "templates": "/t", "science": "/s"}})


def test_paths_expand_variables_with_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """~, $VAR and ${VAR:-default} expand; an unset variable without a default is an error."""
    monkeypatch.setenv("SCRATCH", "/scratch/me")
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert expand("$SCRATCH/sn") == "/scratch/me/sn"
    assert expand("${XDG_DATA_HOME:-/data}/orchestrator") == "/data/orchestrator"
    assert expand("~/x") == str(Path.home() / "x")
    with pytest.raises(BatchInputError, match="not set"):
        expand("$NO_SUCH_VARIABLE_HERE/x")
