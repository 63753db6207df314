"""The commands about manifests themselves: ``validate`` (and its warnings), ``schema`` and
``plan`` (each job and its next fire times)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from orchestrator.cli_common import (
    echo_retries,
    fail,
    read_job_state,
    settings_from,
    stored_retries,
)
from orchestrator.cli_options import JOBS_DIR, STATE_DIR
from orchestrator.tables import OUTPUT, echo_data


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@JOBS_DIR
@STATE_DIR
@click.option(
    "--cluster",
    is_flag=True,
    help="Also check the names in each job's executor options (partitions, QOS, accounts) "
    "against the system the executor reaches (exit 1 when it cannot be asked).",
)
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
def validate(
    paths: tuple[Path, ...],
    jobs_dir: Path | None,
    state_dir: Path | None,
    cluster: bool,
    strict: bool,
) -> None:
    """Check manifests (files or directories; default: the jobs directory).

    Exit 0 when all are valid; else exit 1 with one `path:line:col: message` line per problem.
    Warnings (`path:line:col: warning: ...`: a placeholder left in, a setting that does
    nothing) do not change the exit code unless --strict. Only regular files are read, each
    within a deadline: a FIFO, a device, a dangling link or a file that does not answer (hung
    file system) is a problem line, never a hang.

    Example: orchestrator validate jobs.d --strict
    """
    import os

    from orchestrator.manifests.loader import validate_paths

    targets = list(paths) or [settings_from(jobs_dir, state_dir).jobs_dir]
    # lexists: a dangling symbolic link exists, and the loader says where it points.
    missing = [p for p in targets if not os.path.lexists(p)]
    for path in missing:
        click.echo(f"{path}:1:1: no such file or directory")
    loaded, problems = validate_paths([p for p in targets if os.path.lexists(p)])
    unchecked = False  # --cluster asked, and the cluster did not answer: not a pass
    if cluster:
        from orchestrator.executors.registry import CLUSTER_CHECKS, resolve

        for target in CLUSTER_CHECKS.values():
            check = resolve(target)(loaded)
            problems = sorted([*problems, *check.problems], key=lambda p: (str(p.path), p.line))
            for note in check.notes:
                click.echo(f"note: {note}", err=True)
            for failure in check.failures:
                click.echo(f"orchestrator: {failure}", err=True)
            unchecked = unchecked or bool(check.failures)
    for problem in problems:
        click.echo(str(problem))
    from orchestrator.manifests.warnings import format_warning, warnings_for

    warned = [w for lm in loaded for w in warnings_for(lm)]
    for warning in warned:
        click.echo(format_warning(warning))
    config_bad = bool(warned and strict)
    if not paths:  # the jobs directory: its configuration file too (orchestrator.config)
        from orchestrator.config import ConfigError, config_path, load

        settings = settings_from(jobs_dir, state_dir)
        try:
            load(config_path(settings.jobs_dir))
        except ConfigError as exc:
            click.echo(str(exc))
            config_bad = True
    if problems or missing or unchecked or config_bad:
        sys.exit(1)
    click.echo(f"{len(loaded)} manifest(s) valid", err=True)


@click.command()
@JOBS_DIR
@STATE_DIR
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("schemas"),
    show_default=True,
    help="Directory to write manifest.schema.json into.",
)
@click.option("--check", is_flag=True, help="Exit 1 if the file on disk is stale; write nothing.")
@click.option(
    "--print",
    "to_stdout",
    is_flag=True,
    help="Print the schema instead (an installed package has no schemas/ folder).",
)
def schema(
    jobs_dir: Path | None, state_dir: Path | None, out_dir: Path, check: bool, to_stdout: bool
) -> None:
    """Write the manifest JSON Schema (for editors and CI) into schemas/.

    Example, for an editor with an installed package:
    orchestrator schema --print > ~/.config/orchestrator/manifest.schema.json
    """
    del jobs_dir, state_dir  # accepted like every command's; the schema depends on neither
    from orchestrator.manifests.models import manifest_json_schema

    text = json.dumps(manifest_json_schema(), indent=2, sort_keys=True) + "\n"
    if to_stdout:
        click.echo(text, nl=False)
        return
    target = out_dir / "manifest.schema.json"
    if check:
        current = target.read_text() if target.exists() else ""
        if current != text:
            fail(f"{target} is stale; run 'orchestrator schema'")
        click.echo(f"{target} is up to date")
        return
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    except OSError as exc:
        fail(f"{exc.filename or target}: cannot write the schema: {exc.strerror or exc}")
    click.echo(f"wrote {target}")


@click.command()
@JOBS_DIR
@STATE_DIR
@click.option("-n", "count", default=3, show_default=True, help="Fire times per job.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the same as -o json).")
@OUTPUT
def plan(
    jobs_dir: Path | None, state_dir: Path | None, count: int, as_json: bool, output: str
) -> None:
    """Each job, whether it is valid, and its next fire times in its own time zone.

    Example: orchestrator plan -n 5
    """
    from orchestrator.manifests.loader import scan_directory
    from orchestrator.manifests.models import CronSchedule, EverySchedule
    from orchestrator.scheduling.triggers import next_fire_times
    from orchestrator.status import describe_schedule

    settings = settings_from(jobs_dir, state_dir)
    if not settings.jobs_dir.is_dir():
        fail(f"{settings.jobs_dir}: jobs directory does not exist (create it or pass --jobs-dir)")
    anchors = read_job_state(settings, "anchor")
    retries = read_job_state(settings, "retry")
    scan = scan_directory(settings.jobs_dir)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for name, loaded in sorted(scan.valid.items()):
        m = loaded.manifest
        times: list[str] = []
        if isinstance(m.schedule, CronSchedule | EverySchedule) and not m.suspend:
            anchor = datetime.fromisoformat(anchors[name]) if anchors.get(name) else now
            times = [t.isoformat() for t in next_fire_times(m.schedule, now, count, start=anchor)]
        rows.append(
            {
                "name": name,
                "path": str(loaded.path),
                "valid": True,
                "kind": m.kind,
                "schedule": describe_schedule(m.schedule),
                "suspended": m.suspend,
                "after": list(m.after),
                "next_runs": times,
                "timezone": getattr(m.schedule, "timezone", None),
                "pending_retries": stored_retries(retries.get(name)),
                "error": None,
            }
        )
    for path, err in sorted(scan.invalid.items()):
        rows.append(
            {
                "name": None,
                "path": str(path),
                "valid": False,
                "kind": None,
                "schedule": None,
                "suspended": None,
                "after": [],
                "next_runs": [],
                "pending_retries": [],
                "error": str(err),
            }
        )
    if as_json or output in ("json", "yaml"):
        echo_data(rows, "json" if as_json else output)
    else:
        _echo_plan(rows, now)
    if any(not r["valid"] for r in rows):
        sys.exit(1)


def _echo_plan(rows: list[dict[str, Any]], now: datetime) -> None:
    """One row per job, its next fires in its own time zone; errors and retries under it."""
    from zoneinfo import ZoneInfo

    from orchestrator.humanize import ago, clock
    from orchestrator.tables import coloured, render

    cells = []
    for row in rows:
        if not row["valid"]:
            cells.append([Path(row["path"]).name, coloured("INVALID"), "-", "-"])
            continue
        what = row["schedule"] or (
            "after " + ", ".join(row["after"]) if row["after"] else "by hand"
        )
        zone = ZoneInfo(row["timezone"]) if row.get("timezone") else None
        fires = [datetime.fromisoformat(t) for t in row["next_runs"]]
        nxt = ", ".join(clock(t, zone, now) for t in fires)
        if fires:
            nxt = f"{ago(fires[0], now)}: {nxt}"
        state = "suspended" if row["suspended"] else "ok"
        cells.append([row["name"], coloured(state), what, nxt or "-"])
    lines = render(["JOB", "STATE", "SCHEDULE", "NEXT FIRES"], cells)
    click.echo(lines[0])
    for row, line in zip(rows, lines[1:], strict=True):
        click.echo(line)
        for err in (row["error"] or "").splitlines():
            click.echo(f"    {err}")
        echo_retries(row["pending_retries"])
