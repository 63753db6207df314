"""The command line's run commands: ``status``, ``history``, ``logs`` (read the store, or ask
the daemon) and ``trigger``, ``cancel``, ``reload`` (through its control socket)."""

from __future__ import annotations

import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from orchestrator.cli_common import (
    fail,
    settings_from,
    state_dir_problem,
    stored_retries,
)
from orchestrator.cli_complete import complete_jobs
from orchestrator.cli_options import JOBS_DIR, STATE_DIR
from orchestrator.clock import utcnow
from orchestrator.errors import (
    ControlError,
    DaemonNotRunningError,
    OrchestratorError,
)
from orchestrator.health import DOWN, Health, assess, not_answering
from orchestrator.settings import Settings
from orchestrator.store.base import RunState
from orchestrator.tables import OUTPUT, echo_data


def _offline_status(settings: Settings) -> dict[str, Any]:
    """Status from the files and the store when no daemon answers."""
    from orchestrator.lease import read_holder
    from orchestrator.manifests.loader import scan_directory
    from orchestrator.manifests.models import CronSchedule, EverySchedule
    from orchestrator.scheduling.triggers import next_fire_times
    from orchestrator.status import JobView, job_row, since_for
    from orchestrator.store.sqlite import SQLiteStore

    scan = scan_directory(settings.jobs_dir)
    store = SQLiteStore(settings.db_path) if settings.db_path.exists() else None
    now = datetime.now(UTC)
    rows = []
    try:
        anchors = store.all_job_state("anchor") if store else {}
        retries = store.all_job_state("retry") if store else {}
        for name, loaded in sorted(scan.valid.items()):
            m = loaded.manifest
            nxt = None
            if isinstance(m.schedule, CronSchedule | EverySchedule) and not m.suspend:
                anchor = datetime.fromisoformat(anchors[name]) if anchors.get(name) else now
                found = next_fire_times(m.schedule, now, 1, start=anchor)
                nxt = found[0] if found else None
            last = store.last_run(name) if store else None
            active = store.active_runs(name) if store else []
            since = since_for(store, name, m, anchors.get(name))
            row = job_row(JobView(loaded.path, loaded), nxt, last, active, since)
            row["pending_retries"] = stored_retries(retries.get(name))
            rows.append(row)
        for path, err in sorted(scan.invalid.items()):
            rows.append(job_row(JobView(path, None, err), None, None, []))
    finally:
        if store:
            store.close()
    return {
        "daemon": {
            "running": False,
            "lease": read_holder(settings.state_dir),
            "jobs_dir": str(settings.jobs_dir),
            "state_dir": str(settings.state_dir),
            "jobs_dir_error": None
            if settings.jobs_dir.is_dir()
            else f"{settings.jobs_dir}: jobs directory does not exist",
            "state_dir_note": None
            if settings.db_path.exists()
            else f"no run history in {settings.state_dir} (no daemon has run with it)",
        },
        "jobs": rows,
    }


def _status_and_health(settings: Settings) -> tuple[dict[str, Any] | None, Health]:
    """The daemon's status (the files' when none runs) and its health; no status when the
    daemon does not answer."""
    from orchestrator.control import request

    try:
        data = request(settings.control_socket, {"op": "status"})["status"]
    except DaemonNotRunningError:
        try:
            data = _offline_status(settings)
        except (OrchestratorError, OSError, sqlite3.Error) as exc:
            fail(state_dir_problem(settings, exc), DOWN)
    except ControlError as exc:
        return None, not_answering(str(exc))
    return data, assess(data)


@click.command()
@JOBS_DIR
@STATE_DIR
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the same as -o json).")
@OUTPUT
def status(jobs_dir: Path | None, state_dir: Path | None, as_json: bool, output: str) -> None:
    """Jobs, their validity, next and last runs (from the daemon, or the files when down).

    Exit status 0 all well, 1 degraded (an invalid manifest, a job whose last run did not
    succeed, an overdue job, the run store or an executor's submission unavailable), 2 the
    daemon is not running or not answering; the last line says why (`status --json`:
    `health`). Times are the job's own time zone's (and relative); NEXT says why a job has no
    next fire.

    Example: orchestrator status -o wide
    """
    from orchestrator.status_text import echo_status

    data, health = _status_and_health(settings_from(jobs_dir, state_dir))
    if data is None:
        fail(health.line, health.code)
    if as_json or output in ("json", "yaml"):
        echo_data({**data, "health": health.to_json()}, "json" if as_json else output)
        sys.exit(health.code)
    echo_status(data, wide=output == "wide")
    click.echo(health.line)
    sys.exit(health.code)


@click.command()
@JOBS_DIR
@STATE_DIR
def check(jobs_dir: Path | None, state_dir: Path | None) -> None:
    """One line and an exit status for cron, Nagios or Icinga: 0 OK, 1 WARNING (degraded),
    2 CRITICAL (the daemon is not running or not answering).

    \b
    Example, in a crontab (cron mails what a job prints: here, only what is not OK):
      */15 * * * *  orchestrator check | grep -v '^ORCHESTRATOR OK'
    """
    _, health = _status_and_health(settings_from(jobs_dir, state_dir))
    click.echo(health.line)
    sys.exit(health.code)


@click.command()
@click.argument("job", required=False, shell_complete=complete_jobs)
@JOBS_DIR
@STATE_DIR
@click.option("-n", "--limit", "limit", default=20, show_default=True, help="How many runs.")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice([str(s) for s in RunState]),
    help="Only runs in this state (repeat for several).",
)
@click.option("--since", default=None, help="Only runs created within this long: 7d, 12h.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the same as -o json).")
@OUTPUT
def history(
    job: str | None,
    jobs_dir: Path | None,
    state_dir: Path | None,
    limit: int,
    states: tuple[str, ...],
    since: str | None,
    as_json: bool,
    output: str,
) -> None:
    """Finished and active runs, newest first.

    Example: orchestrator history o2physics-nightly --state failed --since 7d
    """
    settings = settings_from(jobs_dir, state_dir)
    start = None
    if since is not None:
        from orchestrator.durations import parse_duration_s

        try:
            start = utcnow() - timedelta(seconds=parse_duration_s(since))
        except OrchestratorError as exc:
            fail(f"--since: {exc}")
    try:
        runs = _history(settings, job, limit, list(states), start)
    except (OrchestratorError, OSError, sqlite3.Error) as exc:
        fail(state_dir_problem(settings, exc))
    if job is not None and not runs and not _job_known(settings, job):
        fail(f"no job named {job!r} in {settings.jobs_dir} or in the run history")
    if as_json or output in ("json", "yaml"):
        echo_data([r.to_json() for r in runs], "json" if as_json else output)
        return
    if not runs:
        if not settings.db_path.exists():
            click.echo(
                f"no run history in {settings.state_dir} (no daemon has run with it)", err=True
            )
        else:
            click.echo("no runs" + (f" of {job}" if job else "") + " match", err=True)
        return
    _echo_runs(runs, wide=output == "wide")


def _echo_runs(runs: list[Any], wide: bool) -> None:
    """The runs' table: local start times (and how long ago), durations, exit codes as a
    shell shows them; the message (and what the run used) last, never cut."""
    from orchestrator.humanize import ago, clock, exit_text, took
    from orchestrator.tables import coloured, echo_table

    now = utcnow()
    headers = ["RUN ID", "JOB", "STATE", "EXIT", "TRIGGER", "STARTED", "TOOK"]
    headers += ["ATTEMPT", "EXECUTOR", "MESSAGE"] if wide else ["MESSAGE"]
    rows = []
    for r in runs:
        when = r.started_at or r.scheduled_for or r.created_at
        row = [
            r.run_id,
            r.job,
            coloured(str(r.state)),
            exit_text(r.exit_code),
            str(r.trigger),
            f"{clock(when, None, now)} ({ago(when, now)})" if when else "-",
            took(r.duration_s) or "-",
        ]
        if wide:
            row += [str(r.attempt), r.executor or "local"]
        row.append(((r.message or "") + _usage_text((r.result or {}).get("usage"))).strip())
        rows.append(row)
    echo_table(headers, rows)


def _job_known(settings: Settings, job: str) -> bool:
    """Whether a manifest in the jobs directory names ``job`` (or a file is called so)."""
    from orchestrator.manifests.loader import validate_paths

    if not settings.jobs_dir.is_dir():
        return False
    loaded, _ = validate_paths([settings.jobs_dir])
    names = {lm.name for lm in loaded}
    return job in names or any(p.stem == job for p in settings.jobs_dir.glob("*.y*ml"))


def _usage_text(usage: Any) -> str:
    """``  [used: 1m5s wall, 12.3 s CPU, 45 MiB; 0.04 CPU-h, 1.00 GPU-h]`` or ''."""
    if not isinstance(usage, dict):
        return ""
    from orchestrator.humanize import took

    parts = [f"{took(float(usage.get('wall_s') or 0))} wall"]
    parts.append(f"{float(usage.get('cpu_s') or 0):.1f} s CPU")
    if usage.get("max_rss_mb") is not None:
        parts.append(f"{float(usage['max_rss_mb']):.0f} MiB")
    text = ", ".join(parts)
    if "cpu_hours" in usage:
        text += f"; {float(usage['cpu_hours']):.2f} CPU-h"
        if usage.get("gpu_hours"):
            text += f", {float(usage['gpu_hours']):.2f} GPU-h"
        if usage.get("nodes"):
            text += f" on {usage['nodes']}"
    return f"  [used: {text}]"


def _history(
    settings: Settings,
    job: str | None,
    limit: int,
    states: list[str] | None = None,
    since: datetime | None = None,
) -> list[Any]:
    if not settings.db_path.exists():
        return []
    from orchestrator.store.sqlite import SQLiteStore

    store = SQLiteStore(settings.db_path)
    try:
        return list(store.search(job, states or None, since, limit))
    finally:
        store.close()
