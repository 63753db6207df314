"""``orchestrator usage``: CPU-hours and GPU-hours per job (or executor) over a period, for an
allocation report, from what each run recorded (``result.usage``).

CPU-hours are what an allocation is charged for: for a batch system's run its allocation
(elapsed x allocated CPUs, as its executor recorded ``cpu_hours``), for a local run the CPU
time its processes used. "used" is the CPU time the processes used in both cases.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from orchestrator.cli_common import fail, settings_from, state_dir_problem
from orchestrator.cli_options import JOBS_DIR, STATE_DIR
from orchestrator.clock import utcnow
from orchestrator.errors import OrchestratorError
from orchestrator.tables import OUTPUT, echo_data, echo_table


def charged_cpu_hours(usage: dict[str, Any]) -> float:
    """A batch run's allocated CPU-hours (``cpu_hours``); a local run's CPU time in hours."""
    if isinstance(usage.get("cpu_hours"), int | float):
        return float(usage["cpu_hours"])
    return float(usage.get("cpu_s") or 0.0) / 3600


def summarise(rows: list[tuple[str, str, str, dict[str, Any]]], by: str) -> list[dict[str, Any]]:
    """One line per job (or executor), largest CPU-hours first, then the total."""
    groups: dict[str, dict[str, Any]] = {}
    for job, executor, _finished, usage in rows:
        key = job if by == "job" else executor
        g = groups.setdefault(
            key,
            {by: key, "runs": 0, "wall_hours": 0.0, "cpu_hours": 0.0, "cpu_used_hours": 0.0,
             "gpu_hours": 0.0, "max_rss_mb": 0.0},
        )  # fmt: skip
        g["runs"] += 1
        g["wall_hours"] += float(usage.get("wall_s") or 0.0) / 3600
        g["cpu_hours"] += charged_cpu_hours(usage)
        g["cpu_used_hours"] += float(usage.get("cpu_s") or 0.0) / 3600
        g["gpu_hours"] += float(usage.get("gpu_hours") or 0.0)
        g["max_rss_mb"] = max(g["max_rss_mb"], float(usage.get("max_rss_mb") or 0.0))
    lines = sorted(groups.values(), key=lambda g: (-g["cpu_hours"], g[by]))
    if lines:
        total = {by: "total", "runs": sum(g["runs"] for g in lines)}
        for k in ("wall_hours", "cpu_hours", "cpu_used_hours", "gpu_hours"):
            total[k] = sum(g[k] for g in lines)
        total["max_rss_mb"] = max(g["max_rss_mb"] for g in lines)
        lines.append(total)
    return [{k: round(v, 4) if isinstance(v, float) else v for k, v in g.items()} for g in lines]


@click.command()
@click.option(
    "--since",
    default="30d",
    show_default=True,
    help="The period: runs that finished within it (a duration: 7d, 12h, 4w).",
)
@click.option("--by", type=click.Choice(["job", "executor"]), default="job", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the same as -o json).")
@OUTPUT
@JOBS_DIR
@STATE_DIR
def usage(
    since: str,
    by: str,
    as_json: bool,
    output: str,
    jobs_dir: Path | None,
    state_dir: Path | None,
) -> None:
    """CPU-hours and GPU-hours per job over a period, for an allocation report.

    Example: orchestrator usage --since 30d --by job
    """
    from orchestrator.durations import parse_duration_s

    try:
        period = parse_duration_s(since)
    except OrchestratorError as exc:
        fail(f"--since: {exc}")
    settings = settings_from(jobs_dir, state_dir)
    rows: list[tuple[str, str, str, dict[str, Any]]] = []
    start = utcnow() - timedelta(seconds=period)
    if settings.db_path.exists():
        from orchestrator.store.sqlite import SQLiteStore

        try:
            store = SQLiteStore(settings.db_path)
            try:
                rows = store.usage_rows(start)
            finally:
                store.close()
        except (OrchestratorError, OSError, sqlite3.Error) as exc:
            fail(state_dir_problem(settings, exc))
    lines = summarise(rows, by)
    if as_json or output in ("json", "yaml"):
        since_text = start.isoformat(timespec="seconds")
        echo_data({"since": since_text, "by": by, "lines": lines}, "json" if as_json else output)
        return
    if not lines:
        click.echo(f"no run recorded what it used since {start:%Y-%m-%d %H:%M} UTC")
        return
    click.echo(
        f"since {start:%Y-%m-%d %H:%M} UTC (CPU-h: allocated for batch runs, used for local)"
    )
    echo_table(
        [by.upper(), "RUNS", "WALL-H", "CPU-H", "USED-CPU-H", "GPU-H", "PEAK-RSS"],
        [
            [str(g[by]), str(g["runs"]), f"{g['wall_hours']:.2f}", f"{g['cpu_hours']:.2f}",
             f"{g['cpu_used_hours']:.2f}", f"{g['gpu_hours']:.2f}", _mib(g["max_rss_mb"])]
            for g in lines
        ],
    )  # fmt: skip


def _mib(mb: float) -> str:
    return f"{mb / 1024:.1f} GiB" if mb >= 1024 else f"{mb:.0f} MiB"
