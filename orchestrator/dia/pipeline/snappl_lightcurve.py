"""The light curve as Parquet in the Roman SN PIT's light-curve schema (what phrosty writes).

The schema is the one ``snappl.lightcurve.Lightcurve`` (PyPI ``roman-snpit-snappl``, read at
0.48.0) validates and writes, documented on the SN PIT wiki (Roman-Supernova-PIT wiki page
"lightcurve"): an astropy ``QTable`` written with ``format="parquet"``, so the column units and
the metadata travel in the file's ``table_meta_yaml`` key and ``QTable.read(path)`` (snappl's own
reader) restores both. We write it with astropy ourselves rather than depend on snappl: snappl
pins ``astropy<8`` and ``galsim==2.8.4`` and pulls in stpsf, roman-datamodels, photutils, h5py
and pandas, none of which the pipeline needs. ``tests/dia/pipeline/test_outputs.py`` pins the
columns, types, units and metadata against snappl 0.48.0 and validates with snappl when present.

Single-band file (snappl's default, ``multiband=False``): the band is metadata, not a column.
Required columns, first and in this order:

    mjd [d], flux [ct/s], flux_err [ct/s], zpt [mag], NEA [pix2], sky_rms [ct/s],
    observation_id (str), sca (int), pix_x [pix], pix_y [pix]

from our rows' mjd, flux, flux_err, zpt, nea, sky_rms, science_pointing (as a string),
science_sca, pix_x, pix_y (0-offset detector pixels). The units are the schema's: flux and
sky_rms are in the science image's own units, which are DN/s for Roman L2 images (the metadata
says so; zpt converts them to AB magnitudes either way). Every other CSV column follows, under
phrosty's name where it has one (``template_observation_id``, ``template_sca``, ``mag``,
``mag_err``, ``success``) and ours otherwise; ``flux_njy`` and ``flux_njy_err`` carry a nJy unit.

Required metadata: ``provenance_id``, ``diaobject_id``, ``diaobject_position_id``,
``iau_name``, ``ra_err``, ``dec_err``, ``ra_dec_covar`` are None (we have no SN PIT database
ids; snappl requires ``diaobject_id`` to be a UUID when set, so our object id goes to ``oid``),
``band``, ``ra``, ``dec`` are the object's, and ``local_surface_brightness_BAND`` is NaN (not
measured; phrosty writes -999). Extra metadata: ``oid``, ``producer``, ``flux_unit``,
``njy_zero_point``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.dia.pipeline.calibrate import AB_MAG_OF_1_NJY

# (schema name, our row key, kind, unit) in the schema's required order
REQUIRED = (
    ("mjd", "mjd", "float", "d"),
    ("flux", "flux", "float", "ct / s"),
    ("flux_err", "flux_err", "float", "ct / s"),
    ("zpt", "zpt", "float", "mag"),
    ("NEA", "nea", "float", "pix2"),
    ("sky_rms", "sky_rms", "float", "ct / s"),
    ("observation_id", "science_pointing", "str", None),
    ("sca", "science_sca", "int", None),
    ("pix_x", "pix_x", "float", "pix"),
    ("pix_y", "pix_y", "float", "pix"),
)
# our row key -> phrosty's column name, for the extra columns it also writes
PHROSTY_NAMES = {"template_pointing": "template_observation_id"}
# extra columns whose type must not depend on the values of one run (all-empty text, say)
EXTRA_KINDS = {
    "template_pointing": "str",
    "template_sca": "int",
    "flag": "int",
    "flag_reason": "str",
    "success": "bool",
    "science_path": "str",
    "template_path": "str",
    "error": "str",
    "notes": "str",
    "backend": "str",
}
EXTRA_UNITS = {"flux_njy": "nJy", "flux_njy_err": "nJy"}
# row keys that are the same for every row: metadata, not columns
META_KEYS = ("oid", "band")


def parquet_path(csv_path: Path) -> Path:
    """``OID_BAND_lightcurve.parquet`` beside the CSV."""
    return csv_path.with_suffix(".parquet")


def lightcurve_meta(oid: str, band: str, ra: float, dec: float) -> dict[str, Any]:
    """The table metadata: snappl's required keys first, then ours."""
    return {
        "provenance_id": None,
        "diaobject_id": None,
        "diaobject_position_id": None,
        "iau_name": None,
        "band": band,
        "ra": float(ra),
        "dec": float(dec),
        "ra_err": None,
        "dec_err": None,
        "ra_dec_covar": None,
        f"local_surface_brightness_{band}": math.nan,
        "oid": oid,
        "producer": "orchestrator photometry run",
        "flux_unit": "the science image's pixel units (DN/s for Roman L2 images); "
        "m_AB = zpt - 2.5 log10(flux)",
        "njy_zero_point": AB_MAG_OF_1_NJY,
    }


def lightcurve_table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], meta: dict[str, Any]
) -> Any:
    """An astropy QTable of ``rows`` in the schema (``columns``: the CSV's, for the extras)."""
    import astropy.units as u
    import numpy as np
    from astropy.table import QTable

    table = QTable(meta=meta)
    used = set(META_KEYS)
    for name, key, kind, unit in REQUIRED:
        used.add(key)
        table[name] = _column(np, [r.get(key) for r in rows], kind, u.Unit(unit) if unit else None)
    for key in columns:
        if key in used:
            continue
        values = [r.get(key) for r in rows]
        kind = EXTRA_KINDS.get(key) or _infer_kind(values)
        unit = EXTRA_UNITS.get(key)
        table[PHROSTY_NAMES.get(key, key)] = _column(
            np, values, kind, u.Unit(unit) if unit else None
        )
    return table


def write_lightcurve_parquet(
    path: Path,
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    *,
    oid: str,
    band: str,
    ra: float,
    dec: float,
) -> Path:
    """Write ``rows`` to ``path`` (atomically); raises ImportError without pyarrow."""
    import pyarrow  # noqa: F401  (fail before any file is touched, with the package's name)

    table = lightcurve_table(rows, columns, lightcurve_meta(oid, band, ra, dec))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    table.write(tmp, format="parquet", overwrite=True)
    tmp.replace(path)
    return path


def _infer_kind(values: list[Any]) -> str:
    """The column type of a column we have no fixed type for (one added to the CSV later)."""
    present = [v for v in values if v is not None]
    if any(isinstance(v, str) for v in present):
        return "str"
    if present and all(isinstance(v, bool) for v in present):
        return "bool"
    if present and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in present
    ):
        return "int"
    if all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in present):
        return "float"
    return "str"


def _column(np: Any, values: list[Any], kind: str, unit: Any) -> Any:
    if kind == "float":
        data = np.array([math.nan if v is None or v == "" else float(v) for v in values])
    elif kind == "int":
        data = np.array([-1 if v is None or v == "" else int(v) for v in values], dtype=np.int64)
    elif kind == "bool":
        data = np.array([bool(v) for v in values], dtype=bool)
    else:
        data = np.array(["" if v is None else str(v) for v in values], dtype=str)
    return data * unit if unit is not None else data
