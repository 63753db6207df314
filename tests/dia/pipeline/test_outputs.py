"""The light curve's outputs: nJy fluxes, the Parquet copy in the Roman SN PIT schema, the plot.

The schema is pinned here from ``roman-snpit-snappl`` 0.48.0 (``snappl/lightcurve.py``,
``Lightcurve._set_data_and_meta``: the required columns in order with their types and units, and
the required metadata), independently of the writer's own table; when snappl is installed its
own reader and validator check the file too.
"""

from __future__ import annotations

import math
import numbers
import uuid
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
import pytest

from orchestrator.dia.pipeline.runner import COLUMNS, complete_row, read_csv, write_csv
from orchestrator.dia.pipeline.snappl_lightcurve import write_lightcurve_parquet

# snappl 0.48.0, Lightcurve._set_data_and_meta: required_data_cols, data_type_dict, units
SNAPPL_COLUMNS = (
    ("mjd", numbers.Real, u.d),
    ("flux", numbers.Real, u.count / u.s),
    ("flux_err", numbers.Real, u.count / u.s),
    ("zpt", numbers.Real, u.mag),
    ("NEA", numbers.Real, u.pix**2),
    ("sky_rms", numbers.Real, u.count / u.s),
    ("observation_id", str, None),
    ("sca", numbers.Integral, None),
    ("pix_x", numbers.Real, u.pix),
    ("pix_y", numbers.Real, u.pix),
)
_ID = (uuid.UUID, str, type(None))
_REAL_OR_NONE = (numbers.Real, type(None))
# ... meta_type_dict (single band: plus local_surface_brightness_{band}, a real)
SNAPPL_META = {
    "provenance_id": _ID,
    "diaobject_id": _ID,
    "diaobject_position_id": _ID,
    "iau_name": (str, type(None)),
    "band": str,
    "ra": numbers.Real,
    "dec": numbers.Real,
    "ra_err": _REAL_OR_NONE,
    "dec_err": _REAL_OR_NONE,
    "ra_dec_covar": _REAL_OR_NONE,
}


def _row(i: int, **over: Any) -> dict[str, Any]:
    """A pipeline row as pair.py makes it (before nea/sky_rms/flag existed, unless given)."""
    row: dict[str, Any] = {
        "oid": "sn1",
        "band": "R062",
        "mjd": 60000.0 + i,
        "flux": 1000.0 * i - 500.0,
        "flux_err": 50.0 + i,
        "zpt": 26.0 + 0.1 * i,
        "mag": math.nan,
        "mag_err": math.nan,
        "chi2_dof": 1.1,
        "pix_x": 100.25 + i,
        "pix_y": 200.5 - i,
        "science_path": f"/data/images/science_{i:02d}.fits",
        "template_path": f"/data/images/template_{i % 2:02d}.fits",
        "science_pointing": 2000 + i,
        "science_sca": 3 + i,
        "template_pointing": 1000 + i % 2,
        "template_sca": 7,
        "success": True,
        "error": "",
        "kernel_sum": 1.0,
        "fit_chi2_dof": 1.2,
        "psf_fraction": 0.98,
        "n_flagged_in_stamp": 0,
        "backend": "cpu",
        "notes": "",
        "elapsed_s": 0.5,
    }
    row.update(over)
    return complete_row(row)


def _rows() -> list[dict[str, Any]]:
    return [
        _row(0),
        _row(1, nea=7.5, sky_rms=8.25, flag=4, flag_reason="high chi2"),
        _row(2, success=False, flux=math.nan, error="DiaFitError: too few pixels"),
        _row(3, zpt=math.nan),
    ]


def test_njy_matches_astropy_ab_magnitudes() -> None:
    """flux_njy is the AB flux density of the row's magnitude (astropy's ABmag), linear in flux."""
    for flux, zpt in ((1234.5, 26.07), (10.0, 31.4), (3.0e5, 24.2)):
        row = _row(0, flux=flux, flux_err=flux / 10, zpt=zpt)
        expected = ((zpt - 2.5 * math.log10(flux)) * u.ABmag).to_value(u.nJy)
        assert row["flux_njy"] == pytest.approx(expected, rel=1e-4)  # 31.4 vs 31.40006
        assert row["flux_njy_err"] == pytest.approx(expected / 10, rel=1e-4)
    negative = _row(0, flux=-250.0, zpt=26.0)
    positive = _row(0, flux=250.0, zpt=26.0)
    assert negative["flux_njy"] == -positive["flux_njy"] < 0
    assert math.isnan(_row(0, zpt=math.nan)["flux_njy"])


def test_csv_carries_new_columns_and_defaults(tmp_path: Path) -> None:
    """The CSV has nJy fluxes, flag, flag_reason, nea and sky_rms; rows without them get NaN/0."""
    path = tmp_path / "lc.csv"
    write_csv(path, _rows())
    back = read_csv(path)
    assert list(back[0]) == list(COLUMNS)
    for c in ("flux_njy", "flux_njy_err", "flag", "flag_reason", "nea", "sky_rms"):
        assert c in COLUMNS
    assert back[0]["nea"] == "nan"
    assert back[0]["flag"] == "0"
    assert back[0]["flag_reason"] == ""
    assert back[1]["nea"] == "7.5"
    assert back[1]["flag"] == "4"
    assert float(back[1]["flux_njy"]) == pytest.approx(
        500.0 * 10 ** (-0.4 * (26.1 - 31.4)), rel=1e-12
    )


def _write(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    pytest.importorskip("pyarrow", reason="Parquet needs pyarrow (the `photometry` extra)")
    rows = _rows()
    path = tmp_path / "sn1_R062_lightcurve.parquet"
    write_lightcurve_parquet(path, rows, COLUMNS, oid="sn1", band="R062", ra=9.5, dec=-44.0)
    return path, rows


def _read_back(path: Path) -> tuple[dict[str, list[Any]], dict[str, Any], dict[str, Any]]:
    """Columns (pyarrow), metadata and units (the table_meta_yaml header astropy's reader uses)."""
    import pyarrow.parquet as pq
    from astropy.table import meta as table_meta

    table = pq.read_table(path)
    raw = table.schema.metadata[b"table_meta_yaml"].decode()
    header = table_meta.get_header_from_yaml(raw.split("\n"))
    meta = dict(header["meta"])
    serialized = meta.pop("__serialized_columns__", {})
    units = {name: spec["unit"] for name, spec in serialized.items()}
    return table.to_pydict(), meta, units


def _snappl_problems(
    columns: dict[str, list[Any]], meta: dict[str, Any], units: dict[str, Any]
) -> list[str]:
    """What snappl 0.48.0's Lightcurve would reject (single band), as messages."""
    problems = []
    names = list(columns)
    if names[: len(SNAPPL_COLUMNS)] != [c for c, _, _ in SNAPPL_COLUMNS]:
        problems.append(f"required columns not first, in order: {names}")
    for name, kind, unit in SNAPPL_COLUMNS:
        if name not in columns:
            problems.append(f"missing column {name}")
            continue
        if not all(isinstance(v, kind) for v in columns[name]):
            problems.append(f"{name} values are not all {kind}")
        if units.get(name) != unit:
            problems.append(f"{name} has unit {units.get(name)}, not {unit}")
    lsb = f"local_surface_brightness_{meta.get('band')}"
    for key, kind in {**SNAPPL_META, lsb: numbers.Real}.items():
        if key not in meta:
            problems.append(f"missing metadata {key}")
        elif not isinstance(meta[key], kind):
            problems.append(f"metadata {key} is a {type(meta[key])}")
        elif isinstance(kind, tuple) and uuid.UUID in kind and meta[key] is not None:
            uuid.UUID(str(meta[key]))  # snappl's asUUID
    if "band" in columns:
        problems.append("a single-band light curve has band as metadata, not a column")
    return problems


def test_parquet_round_trip_in_snappl_schema(tmp_path: Path) -> None:
    """The Parquet file reads back (pyarrow) with snappl's required columns first, their types,
    units and metadata, our values in them, and every other CSV column after them."""
    path, rows = _write(tmp_path)
    columns, meta, units = _read_back(path)
    assert _snappl_problems(columns, meta, units) == []
    np.testing.assert_array_equal(columns["flux"], [r["flux"] for r in rows])
    np.testing.assert_array_equal(columns["pix_x"], [r["pix_x"] for r in rows])
    np.testing.assert_array_equal(columns["NEA"], [math.nan, 7.5, math.nan, math.nan])
    assert columns["sky_rms"][1] == 8.25
    assert columns["observation_id"] == ["2000", "2001", "2002", "2003"]
    assert columns["sca"] == [3, 4, 5, 6]
    assert columns["flag"] == [0, 4, 0, 0]
    assert columns["flag_reason"][1] == "high chi2"
    assert columns["template_observation_id"] == ["1000", "1001", "1000", "1001"]
    assert columns["success"] == [True, True, False, True]
    assert columns["error"][2] == "DiaFitError: too few pixels"
    assert columns["flux_njy"][1] == pytest.approx(rows[1]["flux_njy"])
    assert units["flux_njy"] == u.nJy
    assert meta["band"] == "R062"
    assert meta["ra"] == 9.5
    assert meta["oid"] == "sn1"
    assert meta["diaobject_id"] is None
    assert meta["njy_zero_point"] == 31.4
    assert math.isnan(meta["local_surface_brightness_R062"])
    moved = {"oid", "band", "science_pointing", "science_sca", "template_pointing", "nea"}
    assert set(COLUMNS) - moved <= set(columns)


def test_schema_check_catches_a_wrong_file(tmp_path: Path) -> None:
    """The pinned schema check fails without NEA, with a wrong unit, or without a metadata key."""
    path, _ = _write(tmp_path)
    columns, meta, units = _read_back(path)
    assert "missing column NEA" in _snappl_problems(
        {k: v for k, v in columns.items() if k != "NEA"}, meta, units
    )
    assert any(
        "flux has unit" in p for p in _snappl_problems(columns, meta, {**units, "flux": u.ct})
    )
    del meta["ra_dec_covar"]
    assert _snappl_problems(columns, meta, units) == ["missing metadata ra_dec_covar"]


def test_parquet_with_astropy_and_snappl_readers(tmp_path: Path) -> None:
    """QTable.read (snappl's reader) restores units and metadata; snappl's Lightcurve validates
    the table (only where pandas / snappl are installed: neither is a dependency)."""
    pytest.importorskip("pandas", reason="astropy's Parquet reader needs pandas")
    from astropy.table import QTable

    path, _ = _write(tmp_path)
    table = QTable.read(path)
    assert table["flux"].unit == u.count / u.s
    assert table.meta["band"] == "R062"
    assert table["NEA"][1] == 7.5 * u.pix**2
    snappl_lightcurve = pytest.importorskip("snappl.lightcurve", reason="snappl not installed")
    lc = snappl_lightcurve.Lightcurve(data=table, meta=dict(table.meta), no_base_path=True)
    assert list(lc.lightcurve.colnames[: len(SNAPPL_COLUMNS)]) == [c for c, _, _ in SNAPPL_COLUMNS]
