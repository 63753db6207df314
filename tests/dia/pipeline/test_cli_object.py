"""`photometry run --object FILE` takes the object from the JSON `photometry simulate` writes."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from orchestrator.dia.cli import photometry


def test_missing_object_fields_are_a_usage_error(tmp_path: Path) -> None:
    """Without --object, a missing --oid/-r/-d/-b is a usage error (exit 2) naming the flag;
    with --object, a field absent from the file is named the same way."""
    lists = tmp_path / "list.txt"
    lists.write_text("path pointing sca mjd band\n")
    args = ["run", "-t", str(lists), "-s", str(lists), "-o", str(tmp_path / "out")]
    result = CliRunner().invoke(photometry, args)
    assert result.exit_code == 2
    assert "missing --oid" in result.output
    obj = tmp_path / "object.json"
    obj.write_text(json.dumps({"oid": "1", "ra": 9.5, "band": "R062"}))
    result = CliRunner().invoke(photometry, [*args, "--object", str(obj)])
    assert result.exit_code == 2
    assert "missing -d/--dec" in result.output
