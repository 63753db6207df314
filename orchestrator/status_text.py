"""`orchestrator status` as a person reads it: the daemon's lines, then a table of jobs (state,
next fire with why there is none, last run), each job's details indented under its row. The
data is the same as ``status --json``'s."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click

from orchestrator.cli_common import echo_retries
from orchestrator.humanize import ago, clock, exit_text, took
from orchestrator.tables import coloured, render

HEADERS = ["JOB", "STATE", "NEXT", "LAST RUN"]
WIDE_HEADERS = ["JOB", "STATE", "KIND", "EXECUTOR", "SCHEDULE", "NEXT", "LAST RUN", "RUN ID"]


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def echo_daemon(d: dict[str, Any], now: datetime) -> None:
    """The daemon's line, then what is wrong with it, one indented line each."""
    if d["running"]:
        started = _time(d.get("started_at"))
        since = f" since {clock(started, None, now)} ({ago(started, now)})" if started else ""
        click.echo(
            f"daemon: running, pid {d['pid']} on {d['host']}{since}, watching by "
            f"{d.get('watch_mode')}"
        )
    else:
        click.echo("daemon: not running")
    if d.get("waiting_for_slot"):
        click.echo(f"  {d['waiting_for_slot']} run(s) waiting for a free slot (see below)")
    if d.get("http"):
        click.echo(f"  status page and /metrics: {d['http']['url']}")
    notes = d.get("notifications") or {}
    if notes.get("retrying") or notes.get("abandoned"):
        click.echo(
            f"  notifications: {notes.get('pending', 0)} waiting ({notes.get('retrying', 0)} "
            f"being retried), {notes.get('abandoned', 0)} given up; last error: "
            f"{notes.get('last_error')}"
        )
    if (d.get("config") or {}).get("error"):
        click.echo(f"  configuration file not applied: {d['config']['error']}")
    for health in (d.get("executors") or {}).values():
        if health.get("note"):  # an executor says what is wrong (a paused submission)
            click.echo(f"  {health['note']}")
    store_health = d.get("store") or {}
    if store_health.get("ok") is False:
        click.echo(
            f"  run store unavailable since {store_health.get('since')}: "
            f"{store_health.get('error')} (retrying in {store_health.get('next_retry_in_s')} s; "
            f"{store_health.get('deferred_events', 0)} events kept until it answers)"
        )
    if d.get("state_dir_note"):
        click.echo(f"  {d['state_dir_note']}")
    if d.get("jobs_dir_error"):
        click.echo(f"  jobs directory: {d['jobs_dir_error']}")


def progress_text(progress: dict[str, Any]) -> str:
    """``done/total`` and the count of each state, when the job publishes them."""
    text = ""
    if isinstance(progress.get("done"), int) and isinstance(progress.get("total"), int):
        text = f"{progress['done']}/{progress['total']} done"
    states = progress.get("states")
    if isinstance(states, dict) and states:
        text += " (" + ", ".join(f"{n} {s}" for s, n in states.items()) + ")"
    return text or "running"


def state_text(row: dict[str, Any]) -> str:
    if not row["valid"]:
        return "INVALID, last good in effect" if row.get("in_effect") else "INVALID"
    if row.get("suspended"):
        return "suspended"
    if row.get("overdue"):
        return "overdue"
    return "ok"


def next_text(row: dict[str, Any], now: datetime) -> str:
    """When the job runs next, in its own time zone, or why it does not by itself."""
    nxt = _time(row.get("next_run"))
    if nxt is not None:
        zone = ZoneInfo(row["timezone"]) if row.get("timezone") else None
        return f"{ago(nxt, now)} ({clock(nxt, zone, now)})"
    if not row.get("in_effect"):
        return "- (invalid)"
    if row.get("suspended"):
        how = "at runtime" if row.get("suspended_at_runtime") else "by its manifest"
        return f"- (suspended {how})"
    if row.get("after"):
        return f"- (after {', '.join(row['after'])})"
    if row.get("schedule") == "on change":
        return "- (when its manifest changes)"
    return "- (by hand: orchestrator trigger)"


def last_text(row: dict[str, Any], now: datetime) -> str:
    last = row.get("last_run")
    if not last:
        return "never run"
    started, finished = _time(last.get("started_at")), _time(last.get("finished_at"))
    if finished is None:
        return f"{last['state']} since {ago(started, now)}" if started else str(last["state"])
    text = f"{last['state']} {ago(finished, now)}"
    if last["state"] != "succeeded":
        text += f", exit {exit_text(last.get('exit_code'))}"
    if started is not None:
        text += f", took {took((finished - started).total_seconds())}"
    return text


def echo_jobs(rows: list[dict[str, Any]], now: datetime, wide: bool) -> None:
    """The table of jobs; each row's details indented under it."""
    cells = []
    for row in rows:
        name = row["name"] if row.get("in_effect") else Path(row["path"]).name
        state = state_text(row)
        base = [name, coloured(state, state.split(",")[0].split(" ")[0])]
        nxt, last = next_text(row, now), last_text(row, now)
        last_cell = coloured(last, (row.get("last_run") or {}).get("state"))
        if wide:
            run_id = (row.get("last_run") or {}).get("run_id") or "-"
            cells.append([*base, row.get("kind") or "-", row.get("executor") or "-",
                          row.get("schedule") or "-", nxt, last_cell, run_id])  # fmt: skip
        else:
            cells.append([*base, nxt, last_cell])
    lines = render(WIDE_HEADERS if wide else HEADERS, cells)
    click.echo(lines[0])
    for row, line in zip(rows, lines[1:], strict=True):
        click.echo(line)
        echo_details(row)


def echo_details(row: dict[str, Any]) -> None:
    for run_id, progress in (row.get("progress") or {}).items():
        click.echo(f"  running {run_id}: {progress_text(progress)}")
    for run_id, moved in (row.get("fallback") or {}).items():
        click.echo(
            f"  running {run_id}: {moved.get('what')} moved to the fallback resources: "
            f"{moved.get('reason')}"
        )
    if row.get("overdue"):
        click.echo(f"    {row['overdue']}")
    if row["error"]:
        for line in row["error"].splitlines():
            click.echo(f"    {line}")
    for warning in row.get("warnings") or []:
        click.echo(f"    warning: {warning}")
    echo_retries(row.get("pending_retries") or [])
    paused = row.get("suspended_at_runtime")
    if paused:
        click.echo(f"    suspended since {paused['since']} (`orchestrator resume {row['name']}`)")
    waiting = row.get("waiting_for_slot")
    if waiting:
        click.echo(
            f"    waiting for a free {waiting['executor']} slot since {waiting['since']} "
            f"({waiting['trigger']}; ORCH_MAX_LOCAL_RUNS caps runs at once)"
        )


def echo_status(data: dict[str, Any], wide: bool) -> None:
    now = datetime.now(UTC)
    echo_daemon(data["daemon"], now)
    if data["jobs"]:
        echo_jobs(data["jobs"], now, wide)
    else:
        click.echo("no jobs")
