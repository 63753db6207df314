"""The SQLite run store's schema and the conversions between its rows and ``RunRecord``."""

from __future__ import annotations

import functools
import json
import sqlite3
from datetime import UTC, datetime
from typing import Any

from orchestrator.errors import StoreError, StoreUnavailableError
from orchestrator.store.base import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    RunRecord,
    RunState,
    Trigger,
)

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5000

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id         TEXT PRIMARY KEY,
    job            TEXT NOT NULL,
    manifest_hash  TEXT NOT NULL,
    trigger        TEXT NOT NULL,
    attempt        INTEGER NOT NULL,
    state          TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    started_at     TEXT,
    finished_at    TEXT,
    exit_code      INTEGER,
    log_path       TEXT,
    run_dir        TEXT,
    executor       TEXT NOT NULL,
    pid            INTEGER,
    pid_start_time INTEGER,
    scheduled_for  TEXT,
    retry_of       TEXT,
    message        TEXT,
    result         TEXT NOT NULL DEFAULT '{}',
    executor_data  TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS runs_job_created ON runs (job, created_at);
CREATE INDEX IF NOT EXISTS runs_state ON runs (state);
CREATE TABLE IF NOT EXISTS job_state (
    job   TEXT NOT NULL,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (job, key)
);
"""

COLUMNS = (
    "run_id, job, manifest_hash, trigger, attempt, state, created_at, started_at, finished_at, "
    "exit_code, log_path, run_dir, executor, pid, pid_start_time, scheduled_for, retry_of, "
    "message, result, executor_data"
)
ACTIVE_SQL = "(" + ", ".join(f"'{s.value}'" for s in sorted(ACTIVE_STATES)) + ")"
TERMINAL_SQL = "(" + ", ".join(f"'{s.value}'" for s in sorted(TERMINAL_STATES)) + ")"


def to_db(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: the store takes timezone-aware datetimes")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def from_db(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).astimezone(UTC)


def enum_or_str(enum: type[RunState] | type[Trigger], value: str) -> str:
    try:
        return enum(value)
    except ValueError:
        return value  # a value written by a newer minor version: show it as it is


def record_from_row(row: sqlite3.Row) -> RunRecord:
    created_at = from_db(row["created_at"])
    assert created_at is not None  # NOT NULL column
    return RunRecord(
        run_id=row["run_id"],
        job=row["job"],
        manifest_hash=row["manifest_hash"],
        trigger=enum_or_str(Trigger, row["trigger"]),
        attempt=row["attempt"],
        state=enum_or_str(RunState, row["state"]),
        created_at=created_at,
        started_at=from_db(row["started_at"]),
        finished_at=from_db(row["finished_at"]),
        exit_code=row["exit_code"],
        log_path=row["log_path"],
        run_dir=row["run_dir"],
        executor=row["executor"],
        pid=row["pid"],
        pid_start_time=row["pid_start_time"],
        scheduled_for=from_db(row["scheduled_for"]),
        retry_of=row["retry_of"],
        message=row["message"],
        result=json.loads(row["result"]),
        executor_data=json.loads(row["executor_data"]),
    )


def unavailable_on_sqlite_errors(method: Any) -> Any:
    """A locked, full or failing database raises ``StoreUnavailableError`` (a ``StoreError``),
    so that callers can tell "try again later" from a bug; the message names the file."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except StoreError:
            raise
        except sqlite3.IntegrityError:
            raise
        except (sqlite3.OperationalError, sqlite3.DatabaseError, OSError) as exc:
            raise StoreUnavailableError(f"run store {self.path}: {exc}") from exc

    return wrapper
