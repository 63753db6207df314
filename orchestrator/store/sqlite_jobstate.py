"""The run store's per-job state (``job_state``: a job's schedule anchor, pending retry, ...),
one JSON value per (job, key); :class:`~orchestrator.store.sqlite.SQLiteStore` inherits it."""

from __future__ import annotations

import json
import sqlite3
from typing import Any


class JobStateQueries:
    """Reads and writes of ``job_state``; the store provides ``_query`` and ``_execute``."""

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        raise NotImplementedError

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        raise NotImplementedError

    def get_job_state(self, job: str, key: str, default: Any = None) -> Any:
        rows = self._query(
            "SELECT value FROM job_state WHERE job = ? AND key = ?",
            (job, key),
        )
        return json.loads(rows[0]["value"]) if rows else default

    def set_job_state(self, job: str, key: str, value: Any) -> None:
        self._execute(
            "INSERT INTO job_state (job, key, value) VALUES (?, ?, ?) "
            "ON CONFLICT (job, key) DO UPDATE SET value = excluded.value",
            (job, key, json.dumps(value)),
        )

    def all_job_state(self, key: str) -> dict[str, Any]:
        rows = self._query("SELECT job, value FROM job_state WHERE key = ?", (key,))
        return {r["job"]: json.loads(r["value"]) for r in rows}
