"""A batch's own results: the summary table (CSV and Parquet) and a grid of light curves."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

SUMMARY_COLUMNS = (
    "oid",
    "band",
    "state",
    "epochs_measured",
    "epochs_failed",
    "backend",
    "wall_s",
    "peak_mb",
    "exit_code",
    "error",
    "lightcurve",
    "measured_in_run",
)
GRID_COLUMNS = 4


def write_summary(run_dir: Path, rows: list[dict[str, Any]]) -> dict[str, str]:
    """``summary.csv``, ``summary.parquet`` (when pyarrow is there) and ``lightcurves.png``;
    returns the paths written, by kind."""
    written: dict[str, str] = {}
    csv_path = run_dir / "summary.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in SUMMARY_COLUMNS})
    written["csv"] = str(csv_path)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        pass
    else:
        table = pa.Table.from_pylist([{k: row.get(k) for k in SUMMARY_COLUMNS} for row in rows])
        pq.write_table(table, run_dir / "summary.parquet")
        written["parquet"] = str(run_dir / "summary.parquet")
    curves = [r for r in rows if r.get("lightcurve")]
    if curves:
        written["png"] = str(plot_grid(run_dir / "lightcurves.png", curves))
    return written


def plot_grid(path: Path, rows: list[dict[str, Any]]) -> Path:
    """One panel per object and band: flux (nJy) against MJD, failed epochs left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(rows)
    ncols = min(GRID_COLUMNS, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.2 * ncols, 2.4 * nrows), squeeze=False, constrained_layout=True
    )
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax, row in zip(axes.flat, rows, strict=False):
        mjd, flux, err = _points(Path(row["lightcurve"]))
        ax.errorbar(mjd, flux, yerr=err, fmt="o", ms=3, capsize=0)
        ax.axhline(0.0, color="0.7", lw=0.8)
        note = " (reused)" if row.get("state") == "skipped" else ""
        ax.set_title(f"{row['oid']} {row['band']}{note}", fontsize=9)
        ax.set_xlabel("MJD", fontsize=8)
        ax.set_ylabel("flux [nJy]", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _points(lightcurve: Path) -> tuple[list[float], list[float], list[float]]:
    mjd: list[float] = []
    flux: list[float] = []
    err: list[float] = []
    try:
        with lightcurve.open(newline="") as fh:
            for row in csv.DictReader(fh):
                try:
                    values = float(row["mjd"]), float(row["flux_njy"]), float(row["flux_njy_err"])
                except (KeyError, ValueError):
                    continue
                if all(math.isfinite(v) for v in values):
                    mjd.append(values[0])
                    flux.append(values[1])
                    err.append(values[2])
    except OSError:
        pass
    return mjd, flux, err
