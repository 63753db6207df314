"""A batch's own results: the summary table (CSV and Parquet), a grid of light curves, the
run's result and its progress, all made from the tasks' result files.

The tasks of a run may end in any order and in different processes (an array job's tasks on
several nodes): each writes its own ``tasks/KEY/result.json`` first, then looks whether every
planned task has one. The last to finish therefore sees them all; of those that do, the one
that creates ``collected`` (``O_EXCL``, which network file systems honour where locks may not
work) writes the summary.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from orchestrator import atomic
from orchestrator.tasks.photometry_batch.execute import DONE_DIR, RESULT_FILE, Index, reused
from orchestrator.tasks.photometry_batch.objects import Problem
from orchestrator.tasks.photometry_batch.plan import Task
from orchestrator.tasks.photometry_batch.records import Layout, TaskResult

STATES = ("measured", "skipped", "failed", "invalid")
COLLECTED = "collected"

SUMMARY_COLUMNS = (
    "oid",
    "band",
    "state",
    "epochs_measured",
    "epochs_failed",
    "backend",
    "fallback",
    "wall_s",
    "peak_mb",
    "exit_code",
    "error",
    "lightcurve",
    "measured_in_run",
    "measured_with",
)
GRID_COLUMNS = 4


def task_rows(
    layout: Layout, tasks: list[Task], problems: list[Problem], recompute: bool = False
) -> tuple[list[dict[str, Any]], int]:
    """The summary's rows so far (tasks with a result file, then the problems as 'invalid'),
    and how many tasks have none yet.

    A task without a result file in this run whose last success is unchanged counts as reused
    (unless ``recompute``): it would be, if it ran, and a retry of an array runs only the tasks
    that failed, so the others never write one in the retry's run."""
    rows: list[dict[str, Any]] = []
    waiting = 0
    index = Index(layout.job_dir / DONE_DIR)
    for task in tasks:
        try:
            row = json.loads((layout.task_dir(task) / RESULT_FILE).read_text())
        except (OSError, ValueError):
            previous = None if recompute else index.unchanged(task)
            if previous is None:
                waiting += 1
                continue
            row = reused(task, previous, layout).row()
        rows.append(row)
    for p in problems:
        error = f"{p.where}: {p.message}"
        rows.append(TaskResult(p.oid or "", p.band or "", "invalid", error=error).row())
    return rows, waiting


def write_progress(layout: Layout, rows: list[dict[str, Any]], total: int) -> None:
    """``progress.json`` in the run's output folder and at ``ORCH_TASK_PROGRESS`` when given
    (what ``status`` shows); a file that cannot be written is left, the batch goes on."""
    data = {
        "total": total,
        "done": len(rows),
        "states": {s: n for s in STATES if (n := sum(r["state"] == s for r in rows))},
        "objects": {f"{r['oid']} {r['band']}".strip(): r["state"] for r in rows},
    }
    paths = [layout.run_dir / "progress.json"]
    if os.environ.get("ORCH_TASK_PROGRESS"):
        paths.append(Path(os.environ["ORCH_TASK_PROGRESS"]))
    for path in paths:
        with contextlib.suppress(OSError):
            atomic.write_json(path, data, 0o644)


def collect(
    layout: Layout, tasks: list[Task], problems: list[Problem], claim: bool, recompute: bool
) -> dict[str, Any] | None:
    """The batch's result once every task has its result file (else None): the summary files
    written and the counts. With ``claim``, only the process that creates ``collected`` does
    it (the others get None)."""
    rows, waiting = task_rows(layout, tasks, problems, recompute)
    write_progress(layout, rows, len(tasks) + len(problems))
    if waiting:
        return None
    if claim:
        try:
            fd = os.open(layout.run_dir / COLLECTED, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return None
        os.close(fd)
    files = write_summary(layout.run_dir, rows)
    counts = {s: sum(r["state"] == s for r in rows) for s in STATES}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no objects"
    return {
        "summary": f"{len(rows)} object-band(s): {summary}",
        "output_dir": str(layout.run_dir),
        "counts": counts,
        "files": files,
        # not "tasks": an array executor keeps its per-array-task outcomes under that key
        "objects": rows,
    }


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
