"""The run store's summaries for metrics and reports: counts by state, durations of finished
runs; :class:`~orchestrator.store.sqlite.SQLiteStore` inherits them."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any

from orchestrator.store.sqlite_rows import COLUMNS, record_from_row, to_db


class ReportQueries:
    """Aggregate and filtered reads over ``runs``; the store provides ``_query``."""

    def search(
        self,
        job: str | None = None,
        states: list[str] | None = None,
        since: datetime | None = None,
        limit: int = 50,
    ) -> list[Any]:
        """Runs newest first, of ``job``, in one of ``states``, created since ``since``."""
        where: list[str] = []
        params: list[Any] = []
        if job is not None:
            where.append("job = ?")
            params.append(job)
        if states:
            where.append(f"state IN ({', '.join('?' for _ in states)})")
            params += states
        if since is not None:
            where.append("created_at >= ?")
            params.append(to_db(since))
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        rows = self._query(
            f"SELECT {COLUMNS} FROM runs {clause}ORDER BY created_at DESC, run_id DESC LIMIT ?",
            (*params, limit),
        )
        return [record_from_row(r) for r in rows]

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        raise NotImplementedError

    def run_counts(self) -> dict[tuple[str, str], int]:
        """How many runs each (job, state) has in the store, in one query."""
        rows = self._query("SELECT job, state, COUNT(*) AS n FROM runs GROUP BY job, state")
        return {(r["job"], r["state"]): int(r["n"]) for r in rows}

    def finished_durations(self) -> list[tuple[str, str, float]]:
        """(job, state, seconds from start to finish) of every finished run the store keeps."""
        rows = self._query(
            "SELECT job, state, (julianday(finished_at) - julianday(started_at)) * 86400.0 AS s "
            "FROM runs WHERE finished_at IS NOT NULL AND started_at IS NOT NULL"
        )
        return [(r["job"], r["state"], max(0.0, float(r["s"]))) for r in rows if r["s"] is not None]

    def usage_rows(self, since: datetime) -> list[tuple[str, str, str, dict[str, Any]]]:
        """(job, executor, finished_at, result.usage) of the runs finished since ``since`` that
        recorded what they used."""
        rows = self._query(
            "SELECT job, executor, finished_at, result FROM runs "
            "WHERE finished_at >= ? AND result LIKE '%\"usage\"%' ORDER BY finished_at",
            (to_db(since),),
        )
        out = []
        for r in rows:
            try:
                usage = (json.loads(r["result"] or "{}") or {}).get("usage")
            except ValueError:
                continue
            if isinstance(usage, dict):
                out.append((r["job"], r["executor"] or "local", r["finished_at"], usage))
        return out
