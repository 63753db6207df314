"""The light-curve plot: calibrated flux (nJy) against MJD, with the truth when it is known.

One marker set (shape and colour) per template, so a template that biases its rows stands out;
rows with a quality flag (``flag != 0``) are drawn hollow and grey, with their errors, so that
they stay visible but do not read as measurements; failed pairs (no flux) are counted in the
title. With a truth table, the true flux of each plotted science image is drawn as a line
through the MJDs of the rows it matches. When no row has a zero point (so no nJy), the plot falls
back to the instrumental flux and says so on its axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.dia.pipeline.truth import TruthTable

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
FLAGGED_COLOUR = "0.55"


def truth_points(
    rows: Sequence[dict[str, Any]], truth: TruthTable, calibrated: bool = True
) -> list[tuple[float, float]]:
    """``(mjd, true flux)`` for each science image of ``rows`` that ``truth`` covers, by MJD.

    The flux is in nJy when ``calibrated``, else in the science image's units; a science image
    paired with several templates gives one point.
    """
    points: dict[str, tuple[float, float]] = {}
    for r in rows:
        key = str(r["science_path"])
        if key in points:
            continue
        match = truth.match(key)
        if match is not None:
            points[key] = (
                float(r["mjd"]),
                match.true_flux_njy if calibrated else match.true_flux,
            )
    return sorted(points.values())


def plot_lightcurve(
    path: Path,
    rows: Sequence[dict[str, Any]],
    title: str,
    truth: TruthTable | None = None,
) -> None:
    """Write the PNG at ``path`` (rows as :func:`orchestrator.dia.pipeline.runner.complete_row`
    makes them: ``flux_njy``, ``flux_njy_err``, ``flag``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["success"]]
    calibrated = any(_finite(r.get("flux_njy")) for r in ok)
    key, err_key = ("flux_njy", "flux_njy_err") if calibrated else ("flux", "flux_err")
    by_template: dict[str, list[dict[str, Any]]] = {}
    for r in ok:
        if _finite(r.get(key)):
            by_template.setdefault(Path(r["template_path"]).name, []).append(r)

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    show_legend = len(by_template) <= 8
    n_flagged = 0
    for i, (name, rs) in enumerate(sorted(by_template.items())):
        rs.sort(key=lambda r: r["mjd"])
        marker = MARKERS[i % len(MARKERS)]
        good = [r for r in rs if not _flagged(r)]
        flagged = [r for r in rs if _flagged(r)]
        n_flagged += len(flagged)
        if good:
            ax.errorbar(
                [r["mjd"] for r in good],
                [r[key] for r in good],
                yerr=[r[err_key] for r in good],
                fmt=marker,
                color=f"C{i % 10}",
                ms=4,
                capsize=2,
                label=name if show_legend else None,
            )
        if flagged:
            ax.errorbar(
                [r["mjd"] for r in flagged],
                [r[key] for r in flagged],
                yerr=[r[err_key] for r in flagged],
                fmt=marker,
                color=FLAGGED_COLOUR,
                mfc="none",
                ms=4,
                capsize=2,
            )
    if n_flagged:  # one legend entry for all flagged rows
        ax.plot([], [], "o", color=FLAGGED_COLOUR, mfc="none", ms=4, label="flagged")
    if truth is not None:
        points = truth_points(rows, truth, calibrated)
        if points:
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                "-",
                color="k",
                lw=1.0,
                alpha=0.7,
                zorder=0,
                label="truth",
            )
    failed = len(rows) - len(ok)
    ax.axhline(0, color="0.6", lw=0.8, zorder=0)
    ax.set_xlabel("MJD")
    ax.set_ylabel(
        "flux (nJy; AB zero point 31.4)"
        if calibrated
        else "flux (science image units; no zero point)"
    )
    ax.set_title(title + (f"  ({failed} failed pairs)" if failed else ""))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, title="template" if show_legend else None, title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _flagged(row: dict[str, Any]) -> bool:
    """``flag != 0`` (an int in pipeline rows, a string in rows read back from the CSV)."""
    try:
        return int(float(row.get("flag") or 0)) != 0
    except (TypeError, ValueError):
        return True  # an unreadable flag is not a clean row
