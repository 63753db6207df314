"""The truth table: reading it, matching it to light-curve rows, drawing it, and `--truth`."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from orchestrator.dia.cli import photometry
from orchestrator.dia.pipeline.plot import plot_lightcurve, truth_points
from orchestrator.dia.pipeline.runner import complete_row
from orchestrator.dia.pipeline.truth import TruthFormatError, default_truth_path, read_truth


def _truth_csv(folder: Path, rows: list[dict[str, Any]], name: str = "truth.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _row(data: Path, i: int, template: int, **over: Any) -> dict[str, Any]:
    row = {
        "mjd": 60000.0 + 10 * i,
        "flux": 500.0 * i + 20 * template,
        "flux_err": 40.0,
        "zpt": 26.0,
        "success": True,
        "science_path": str(data / "images" / f"science_{i:02d}.fits"),
        "template_path": str(data / "images" / f"template_{template:02d}.fits"),
        **over,
    }
    return complete_row(row)


def test_truth_is_matched_to_rows_by_science_image(tmp_path: Path) -> None:
    """Paths in the table are relative to its folder; each science image gives one truth point
    (in nJy from its own zpt) at its rows' MJD; images the table lacks have none."""
    data = tmp_path / "data"
    truth = read_truth(
        _truth_csv(
            data,
            [
                {"science_path": "images/science_00.fits", "true_flux": 0.0, "zpt": 26.0},
                {"science_path": "images/science_02.fits", "true_flux": 1000.0, "zpt": 25.0},
                {"science_path": "images/science_09.fits", "true_flux": 5.0, "zpt": 25.0},
            ],
        )
    )
    rows = [_row(data, i, t) for i in range(3) for t in range(2)]
    assert truth.match(rows[4]["science_path"]).true_flux == 1000.0  # type: ignore[union-attr]
    assert truth.match(rows[2]["science_path"]) is None  # science_01: not in the table
    points = truth_points(rows, truth)
    assert [p[0] for p in points] == [60000.0, 60020.0]
    assert points[0][1] == 0.0
    assert points[1][1] == pytest.approx(1000.0 * 10 ** (-0.4 * (25.0 - 31.4)))
    assert truth_points(rows, truth, calibrated=False)[1] == (60020.0, 1000.0)


def test_plot_draws_truth_and_flagged_rows(tmp_path: Path) -> None:
    """The PNG is written with flagged and failed rows, and the truth changes the picture."""
    data = tmp_path / "data"
    truth = read_truth(
        _truth_csv(
            data, [{"science_path": "images/science_01.fits", "true_flux": 480.0, "zpt": 26}]
        )
    )
    rows = [_row(data, i, t) for i in range(4) for t in range(2)]
    rows[3] = {**rows[3], "flag": 2, "flag_reason": "fit chi2"}
    rows[5] = {**rows[5], "success": False, "flux": math.nan, "flux_njy": math.nan}
    with_truth, without = tmp_path / "truth.png", tmp_path / "plain.png"
    plot_lightcurve(with_truth, rows, "sn R062", truth=truth)
    plot_lightcurve(without, rows, "sn R062")
    assert with_truth.stat().st_size > 1000
    assert without.stat().st_size > 1000
    assert with_truth.read_bytes() != without.read_bytes()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("science_path,zpt\nimages/a.fits,26\n", "lacks the column(s) true_flux"),
        ("science_path,true_flux,zpt\nimages/a.fits,bright,26\n", ":2: true_flux must be a number"),
        ("science_path,true_flux,zpt\nimages/a.fits,1,nan\n", ":2: zpt must be finite"),
        ("science_path,true_flux,zpt\n", "header but no rows"),
        (
            "science_path,true_flux,zpt\na.fits,1,26\na.fits,2,26\n",
            ":3: science_path a.fits appears",
        ),
    ],
)
def test_bad_truth_table_names_the_file(tmp_path: Path, text: str, expected: str) -> None:
    """A malformed truth table raises TruthFormatError naming the file, line and field."""
    path = tmp_path / "truth.csv"
    path.write_text(text)
    with pytest.raises(TruthFormatError, match=r"truth\.csv") as info:
        read_truth(path)
    assert expected in str(info.value)


def test_truth_option_with_a_bad_file_is_a_usage_error(tmp_path: Path) -> None:
    """`photometry run --truth BAD` exits 2 before any pair runs, naming the file and what lacks."""
    lists = tmp_path / "list.txt"
    lists.write_text("path pointing sca mjd band\n")
    bad = tmp_path / "mytruth.csv"
    bad.write_text("science_path,flux\nx.fits,3\n")
    args = ["run", "--oid", "1", "-r", "9.5", "-d", "-44", "-b", "R062", "-t", str(lists)]
    result = CliRunner().invoke(
        photometry, [*args, "-s", str(lists), "-o", str(tmp_path / "out"), "--truth", str(bad)]
    )
    assert result.exit_code == 2
    assert "--truth" in result.output
    assert "mytruth.csv" in result.output
    assert "true_flux" in result.output
    assert not (tmp_path / "out").exists()


def test_default_truth_beside_object(tmp_path: Path) -> None:
    """truth.csv beside object.json is the default truth; none there means none."""
    obj = tmp_path / "object.json"
    obj.write_text("{}")
    assert default_truth_path(obj) is None
    assert default_truth_path(None) is None
    (tmp_path / "truth.csv").write_text("science_path,true_flux,zpt\na.fits,1,26\n")
    assert default_truth_path(obj) == tmp_path / "truth.csv"


def test_demo_run_writes_parquet_and_plots_default_truth(tmp_path: Path) -> None:
    """The demo's two commands (simulate, then run --object) write CSV, Parquet and PNG, and the
    run reads the simulator's truth.csv by default."""
    pytest.importorskip("pyarrow", reason="Parquet needs pyarrow (the `photometry` extra)")
    import pyarrow.parquet as pq

    data, out = tmp_path / "data", tmp_path / "lc"
    runner = CliRunner()
    sim = ["simulate", "--out", str(data), "--size", "160", "--epochs", "3", "--templates", "2"]
    assert runner.invoke(photometry, [*sim, "--seed", "3"]).exit_code == 0
    run = [
        *("run", "--object", str(data / "object.json"), "-o", str(out)),
        *("-t", str(data / "templates.txt"), "-s", str(data / "science.txt")),
        *("--cutout", "0", "--kernel-half-width", "3", "--kernel-poly-order", "0"),
    ]
    result = runner.invoke(photometry, run)
    assert result.exit_code == 0, result.output
    assert "truth_table" in result.output
    assert str(data / "truth.csv") in result.output
    oid = json.loads((data / "object.json").read_text())["oid"]
    stem = out / oid / f"{oid}_R062_lightcurve"
    table = pq.read_table(stem.with_suffix(".parquet")).to_pydict()
    assert len(table["flux"]) == 6
    assert all(table["success"])
    assert all(math.isfinite(x) for x in table["pix_x"] + table["flux_njy"])
    assert stem.with_suffix(".png").stat().st_size > 1000


def test_broken_default_truth_is_skipped(tmp_path: Path) -> None:
    """A broken truth.csv beside --object (nobody asked for it) is logged and skipped: the run
    goes on (here to the empty lists' own error)."""
    (tmp_path / "object.json").write_text(
        json.dumps({"oid": "1", "ra": 9.5, "dec": -44.0, "band": "R062"})
    )
    (tmp_path / "truth.csv").write_text("not,a,truth\n1,2,3\n")
    lists = tmp_path / "list.txt"
    lists.write_text("path pointing sca mjd band\n")
    result = CliRunner().invoke(
        photometry,
        [
            *("run", "--object", str(tmp_path / "object.json"), "-o", str(tmp_path / "out")),
            *("-t", str(lists), "-s", str(lists)),
        ],
    )
    assert "truth_skipped" in result.output
    assert "lacks the column(s)" in result.output
    assert "--truth" not in result.output
    assert result.exit_code == 2
    assert "no template exposure" in result.output
