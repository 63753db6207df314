"""What the command line's modules share: settings from the flags, one-line failures, JSON."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from orchestrator.settings import Settings, SettingsError


def settings_from(jobs_dir: Path | None, state_dir: Path | None) -> Settings:
    """A command's settings: its own flags, else the global ones (``orchestrator --state-dir X
    CMD``), else the environment, the configuration file and the defaults (Settings.resolve)."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        root = ctx.find_root().params
        jobs_dir = jobs_dir or root.get("jobs_dir")
        state_dir = state_dir or root.get("state_dir")
    try:
        return Settings.resolve(jobs_dir, state_dir)
    except SettingsError as exc:
        fail(str(exc))
        raise  # unreachable: fail exits


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"orchestrator: {message}", err=True)
    sys.exit(code)


def state_dir_condition(state_dir: Path) -> str | None:
    """What the state directory's file system says is wrong with it, if it says so: SQLite's
    own words for it ("disk I/O error", "unable to open database file") do not."""
    try:
        fs = os.statvfs(state_dir)
    except OSError:
        return None
    if fs.f_flag & os.ST_RDONLY:
        return "its file system is read-only"
    if fs.f_bavail == 0:
        return "its file system is full"
    return None


def state_dir_problem(settings: Settings, exc: BaseException) -> str:
    """One line for a state directory that cannot be used (read-only, full, unreadable): the
    directory, what failed, and the file system's condition when it explains the failure."""
    if isinstance(exc, OSError):
        what = exc.strerror or str(exc)
        if exc.filename:
            what += f": {exc.filename}"
    else:
        what = str(exc)
    line = f"state directory {settings.state_dir}: {what}"
    condition = state_dir_condition(settings.state_dir)
    if condition:
        line += f" ({condition})"
    return " ".join(line.split())


def print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def stored_retries(value: Any) -> list[dict[str, Any]]:
    """Pending retries as the daemon stores them: one dict (older versions) or a list."""
    items = [value] if isinstance(value, dict) else value or []
    return sorted((dict(i) for i in items if isinstance(i, dict)), key=lambda i: str(i.get("due")))


def echo_retries(retries: list[dict[str, Any]]) -> None:
    for r in retries:
        click.echo(
            f"    retry (attempt {r.get('attempt')}) of run {r.get('retry_of')} due {r.get('due')}"
            f"; 'orchestrator cancel {r.get('retry_of')}' drops it"
        )


def read_job_state(settings: Settings, key: str) -> dict[str, Any]:
    if not settings.db_path.exists():
        return {}
    from orchestrator.store.sqlite import SQLiteStore

    store = SQLiteStore(settings.db_path)
    try:
        return store.all_job_state(key)
    finally:
        store.close()
