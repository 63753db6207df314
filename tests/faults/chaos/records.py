"""The plain rows the audit reads, and their readers: run records from the store
(``runs.sqlite``), lines of the side-effect file, and the daemon's log events."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunRow:
    """The columns of one run record the audit reads (times as epoch seconds)."""

    run_id: str
    job: str
    trigger: str
    attempt: int
    state: str
    created_at: float
    finished_at: float | None
    exit_code: int | None
    scheduled_for: float | None
    retry_of: str | None


@dataclass(frozen=True)
class Effect:
    """One line of the side-effect file."""

    kind: str  # start | end
    run_id: str
    job: str
    at: float
    exit_code: int | None = None


@dataclass(frozen=True)
class SkipLine:
    """A ``run_skipped_concurrency`` line of the daemon's log."""

    job: str
    trigger: str
    at: float


def epoch(value: str | None) -> float | None:
    """An ISO 8601 time from the store or the log as epoch seconds (``None`` stays)."""
    return None if value is None else datetime.fromisoformat(value).timestamp()


def read_runs(db_path: Path) -> list[RunRow]:
    """Every run record in the store, oldest first (read with sqlite3, not through the CLI)."""
    conn = sqlite3.connect(str(db_path), timeout=10)
    try:
        rows = conn.execute(
            "SELECT run_id, job, trigger, attempt, state, created_at, finished_at, exit_code, "
            "scheduled_for, retry_of FROM runs ORDER BY created_at, run_id"
        ).fetchall()
    finally:
        conn.close()
    out = []
    for run_id, job, trigger, attempt, state, created, finished, code, sched, retry_of in rows:
        created_at = epoch(created)
        assert created_at is not None  # NOT NULL column
        out.append(
            RunRow(
                run_id,
                job,
                trigger,
                int(attempt),
                state,
                created_at,
                epoch(finished),
                code,
                epoch(sched),
                retry_of,
            )
        )
    return out


def read_job_state(db_path: Path, key: str) -> dict[str, Any]:
    """``{job: value}`` of one job_state key."""
    conn = sqlite3.connect(str(db_path), timeout=10)
    try:
        rows = conn.execute("SELECT job, value FROM job_state WHERE key = ?", (key,)).fetchall()
    finally:
        conn.close()
    return {job: json.loads(value) for job, value in rows}


def read_effects(path: Path) -> list[Effect]:
    """The side-effect file's lines; a line that is not whole is an error (writes are atomic)."""
    if not path.exists():
        return []
    out = []
    for number, text in enumerate(path.read_text().splitlines(), 1):
        parts = text.split()
        if len(parts) == 5 and parts[0] == "start":
            out.append(Effect("start", parts[1], parts[2], float(parts[4])))
        elif len(parts) == 6 and parts[0] == "end":
            out.append(Effect("end", parts[1], parts[2], float(parts[4]), int(parts[5])))
        else:
            raise ValueError(f"{path}:{number}: torn or unknown side-effect line {text!r}")
    return out


def read_skips(events: Iterable[dict[str, Any]]) -> list[SkipLine]:
    """The daemon's ``run_skipped_concurrency`` lines (a forbid skip writes no run record)."""
    out = []
    for event in events:
        if event.get("event") == "run_skipped_concurrency":
            at = epoch(event.get("timestamp"))
            if at is not None:
                out.append(SkipLine(str(event.get("job")), str(event.get("trigger")), at))
    return out


def read_retry_dues(events: Iterable[dict[str, Any]]) -> dict[tuple[str, int], float]:
    """``{(retry_of, attempt): due}`` from the daemon's ``retry_scheduled`` lines (the line's
    time plus its ``delay_s``): when each retry the daemon scheduled was due."""
    out: dict[tuple[str, int], float] = {}
    for event in events:
        if event.get("event") != "retry_scheduled":
            continue
        at = epoch(event.get("timestamp"))
        if at is not None and event.get("run_id") and event.get("attempt") is not None:
            key = (str(event["run_id"]), int(event["attempt"]))
            out.setdefault(key, at + float(event.get("delay_s") or 0.0))
    return out
