"""The rows that `orchestrator status` and `plan` print, built the same way by the daemon
(live) and by the command line when no daemon runs (from the files and the store)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.clock import utcnow
from orchestrator.errors import ManifestError
from orchestrator.manifests.loader import LoadedManifest
from orchestrator.manifests.models import ChangeSchedule, CronSchedule, EverySchedule
from orchestrator.store.base import RunRecord
from orchestrator.tasks.python_task import TASK_PROGRESS_FILE


@dataclass
class JobView:
    """A job as the daemon sees it: the version in effect (last known good) and the current
    problem with its file, if any. ``loaded`` is None for a new file that never was valid."""

    path: Path
    loaded: LoadedManifest | None
    error: ManifestError | None = None

    @property
    def name(self) -> str:
        if self.loaded is not None:
            return self.loaded.name
        return self.path.stem


def describe_schedule(schedule: object) -> str | None:
    if isinstance(schedule, CronSchedule):
        extra = f" ({schedule.timezone})"
        return f"cron {schedule.cron}{extra}"
    if isinstance(schedule, EverySchedule):
        from orchestrator.durations import format_duration

        return f"every {format_duration(schedule.every)}"
    if isinstance(schedule, ChangeSchedule):
        return "on change"
    return None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def last_run_summary(run: RunRecord | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "run_id": run.run_id,
        "state": str(run.state),
        "trigger": str(run.trigger),
        "exit_code": run.exit_code,
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "message": run.message,
        "result": run.result or {},
    }


@dataclass(frozen=True)
class Since:
    """What ``expect.success_within`` is judged on: the job's last success, and when its
    schedule started (the ``anchor``: the reference while it never succeeded)."""

    last_success: datetime | None
    schedule_started: datetime | None


def overdue(manifest: Any, since: Since | None, now: datetime) -> str | None:
    """Why the job is overdue (``expect.success_within`` passed without a success), or None.
    A job that never succeeded is judged from when its schedule started; one without a
    schedule, only once it has succeeded."""
    expect = getattr(manifest, "expect", None)
    if expect is None or since is None or manifest.suspend:
        return None
    from orchestrator.durations import format_duration

    if since.last_success is not None:
        reference, what = since.last_success, "last success {ago} ago"
    elif since.schedule_started is not None:
        reference, what = since.schedule_started, "no success in {ago}"
    else:
        return None
    waited = (now - reference).total_seconds()
    if waited <= expect.success_within:
        return None
    ago, within = format_duration(round(waited)), format_duration(expect.success_within)
    return f"overdue: {what.format(ago=ago)} (expected within {within})"


def job_row(
    view: JobView,
    next_run: datetime | None,
    last_run: RunRecord | None,
    active: list[RunRecord],
    since: Since | None = None,
) -> dict[str, Any]:
    manifest = view.loaded.manifest if view.loaded else None
    return {
        "name": view.name,
        "kind": manifest.kind if manifest else None,
        "path": str(view.path),
        "valid": view.error is None,
        "error": str(view.error) if view.error else None,
        "in_effect": manifest is not None,
        "manifest_hash": view.loaded.content_hash if view.loaded else None,
        "suspended": manifest.suspend if manifest else None,
        "schedule": describe_schedule(manifest.schedule) if manifest else None,
        "timezone": getattr(manifest.schedule, "timezone", None) if manifest else None,
        "after": list(manifest.after) if manifest else [],
        "executor": manifest.executor_name if manifest is not None else None,
        "next_run": _iso(next_run),
        "active_runs": [r.run_id for r in active],
        "progress": {r.run_id: p for r in active if (p := run_progress(r)) is not None},
        # an executor moved some of a run's tasks elsewhere (a stalled queue's fallback)
        "fallback": {
            r.run_id: fb for r in active if isinstance(fb := (r.result or {}).get("fallback"), dict)
        },
        "last_run": last_run_summary(last_run),
        "overdue": overdue(manifest, since, utcnow()) if manifest is not None else None,
        # what `validate` warns about (a placeholder left in, ...)
        "warnings": [
            f"{w.path.name}:{w.line}:{w.col}: {w.field}: {w.message}"
            for w in (view.loaded.warnings if view.loaded else ())
        ],
    }


PROGRESS_MAX_BYTES = 256 * 1024


def run_progress(run: RunRecord) -> dict[str, Any] | None:
    """What a running job last published in ``ORCH_TASK_PROGRESS`` (a JSON object in its run
    directory), or None. Read with a size cap; a file being replaced or unreadable is None."""
    if run.run_dir is None:
        return None
    path = Path(run.run_dir) / TASK_PROGRESS_FILE
    try:
        with path.open("rb") as fh:
            data = json.loads(fh.read(PROGRESS_MAX_BYTES))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def since_for(store: Any, name: str, manifest: Any, anchor: str | None) -> Since | None:
    """The :class:`Since` of a job with ``expect``, from the store (None without ``expect``:
    no query)."""
    if getattr(manifest, "expect", None) is None:
        return None
    from orchestrator.store.base import RunState

    last = store.last_finished_run(name, RunState.SUCCEEDED) if store is not None else None
    ended = last.finished_at if last is not None else None
    return Since(ended, datetime.fromisoformat(anchor) if anchor else None)
