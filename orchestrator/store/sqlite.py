"""The run store in one SQLite file (WAL), with a schema version.

One connection, guarded by a lock, serves every thread of the daemon; the CLI opens the same
file from another process at the same time (WAL lets it read while the daemon writes, and
``busy_timeout`` makes either side wait rather than fail on a short write lock).

Timestamps are stored as ISO-8601 strings in UTC with a fixed width
(``2024-05-01T12:00:00.000000+00:00``), so string order is time order.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.clock import utcnow
from orchestrator.errors import StoreError
from orchestrator.fsinfo import is_network_filesystem
from orchestrator.statedir import create_private_file, tighten_file
from orchestrator.store.base import (
    TERMINAL_STATES,
    RunRecord,
    RunState,
    Trigger,
)
from orchestrator.store.sqlite_jobstate import JobStateQueries
from orchestrator.store.sqlite_reports import ReportQueries
from orchestrator.store.sqlite_rows import (
    ACTIVE_SQL,
    BUSY_TIMEOUT_MS,
    COLUMNS,
    SCHEMA_SQL,
    SCHEMA_VERSION,
    TERMINAL_SQL,
    record_from_row,
    to_db,
    unavailable_on_sqlite_errors,
)

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]


class SQLiteStore(JobStateQueries, ReportQueries):
    """The ``Store`` protocol on one SQLite file; see ``orchestrator.store.base.Store``.

    Opening creates the file and its schema when missing, and raises ``StoreError`` when the
    file is not a database or carries a schema version this code does not know.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # History is the user's alone whatever the umask: SQLite gives -wal and -shm the
            # database file's mode, so a file created 0600 here makes all three 0600.
            create_private_file(self.path)
            for suffix in ("-wal", "-shm", "-journal"):
                tighten_file(self.path.with_name(self.path.name + suffix))
            # isolation_level=None: autocommit; multi-statement changes use explicit BEGIN.
            self._conn = sqlite3.connect(
                str(self.path),
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open run store {self.path}: {exc}") from exc
        self._conn.row_factory = sqlite3.Row
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # WAL's index is shared memory, which only processes of one host share: on a file
            # system shared between nodes (a `history` on another login node) a rollback
            # journal, which needs nothing but the POSIX locks (orchestrator/locks.py).
            if is_network_filesystem(self.path.parent):
                self._conn.execute("PRAGMA journal_mode = DELETE")
                self._conn.execute("PRAGMA synchronous = FULL")
            else:
                self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._init_schema()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise StoreError(f"cannot open run store {self.path}: {exc}") from exc
        except StoreError:
            self._conn.close()
            raise

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT under the lock (rolled back on any error)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                # A COMMIT that failed (disk full) leaves the transaction open; without the
                # rollback every later BEGIN would fail with "within a transaction".
                if self._conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                raise

    def _init_schema(self) -> None:
        with self._transaction() as conn:
            has_meta = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
            ).fetchone()
            if has_meta:
                row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                stored = None if row is None else row["value"]
                if stored != str(SCHEMA_VERSION):
                    # Refuse rather than guess: a newer release may have changed what columns
                    # mean, and writing to its file would corrupt its history.
                    raise StoreError(
                        f"run store {self.path} has schema version {stored}, this orchestrator "
                        f"knows version {SCHEMA_VERSION}; use the orchestrator release that "
                        f"wrote it, or move the file aside to start a new history"
                    )
            for statement in SCHEMA_SQL.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        with self._lock:
            return self._conn.execute(sql, params).rowcount

    def _require_change(self, changed: int, run_id: str) -> None:
        if changed == 0:
            raise StoreError(f"no run {run_id!r} in run store {self.path}")

    # ------------------------------------------------------------------ runs

    def new_run_id(self, now: datetime | None = None) -> str:
        """A fresh, time-sortable run id ``YYYYMMDDTHHMMSSZ-<6 hex>`` (UTC)."""
        when = (now or utcnow()).astimezone(UTC)
        return f"{when:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"

    def create_run(
        self,
        job: str,
        manifest_hash: str,
        trigger: str,
        attempt: int = 1,
        scheduled_for: datetime | None = None,
        executor: str = "local",
        retry_of: str | None = None,
        run_id: str | None = None,
        state: RunState = RunState.PENDING,
        message: str | None = None,
    ) -> RunRecord:
        """Write a new run record (created now) and return it; see ``Store.create_run``."""
        now = utcnow()
        run_id = run_id or self.new_run_id(now)
        state = RunState(state)
        finished_at = now if state in TERMINAL_STATES else None
        try:
            with self._lock:
                self._conn.execute(
                    f"INSERT INTO runs ({COLUMNS}) VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, NULL, ?, NULL, NULL, NULL, ?, NULL, NULL, ?, ?, ?, "
                    "'{}', '{}')",
                    (
                        run_id,
                        job,
                        manifest_hash,
                        str(trigger),
                        attempt,
                        state.value,
                        to_db(now),
                        to_db(finished_at),
                        executor,
                        to_db(scheduled_for),
                        retry_of,
                        message,
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"run {run_id!r} already exists in {self.path}") from exc
        record = self.get_run(run_id)
        assert record is not None
        return record

    def set_run_paths(self, run_id: str, run_dir: str, log_path: str) -> None:
        """Record the run's directory and log file; ``StoreError`` if no such run."""
        changed = self._execute(
            "UPDATE runs SET run_dir = ?, log_path = ? WHERE run_id = ?",
            (str(run_dir), str(log_path), run_id),
        )
        self._require_change(changed, run_id)

    def mark_running(
        self,
        run_id: str,
        pid: int | None,
        pid_start_time: int | None,
        started_at: datetime | None = None,
    ) -> bool:
        """Move a pending run to running; False when it was not pending."""
        changed = self._execute(
            "UPDATE runs SET state = ?, pid = ?, pid_start_time = ?, started_at = ? "
            "WHERE run_id = ? AND state = ?",
            (
                RunState.RUNNING.value,
                pid,
                pid_start_time,
                to_db(started_at or utcnow()),
                run_id,
                RunState.PENDING.value,
            ),
        )
        return changed == 1

    def finish_run(
        self,
        run_id: str,
        state: RunState,
        exit_code: int | None = None,
        message: str | None = None,
        finished_at: datetime | None = None,
        result: dict[str, Any] | None = None,
    ) -> bool:
        """Move an active run into terminal ``state`` once; see ``Store.finish_run``."""
        state = RunState(state)
        if state not in TERMINAL_STATES:
            raise ValueError(f"finish_run needs a terminal state, not {state.value!r}")
        # One UPDATE guarded by the state: SQLite serialises writers, so of several racing
        # callers (threads here, or another process) exactly one sees rowcount 1.
        changed = self._execute(
            "UPDATE runs SET state = ?, exit_code = ?, message = COALESCE(?, message), "
            "finished_at = ?, result = json_patch(result, ?) "
            f"WHERE run_id = ? AND state IN {ACTIVE_SQL}",
            (
                state.value,
                exit_code,
                message,
                to_db(finished_at or utcnow()),
                json.dumps(result or {}),
                run_id,
            ),
        )
        return changed == 1

    def update_result(self, run_id: str, result: dict[str, Any]) -> None:
        """Merge ``result`` into the run's result (RFC 7396: None deletes a key)."""
        changed = self._execute(
            "UPDATE runs SET result = json_patch(result, ?) WHERE run_id = ?",
            (json.dumps(result), run_id),
        )
        self._require_change(changed, run_id)

    def set_message(self, run_id: str, message: str) -> None:
        """Replace the run's message (a task's one-line summary after it ended)."""
        changed = self._execute("UPDATE runs SET message = ? WHERE run_id = ?", (message, run_id))
        self._require_change(changed, run_id)

    def update_executor_data(self, run_id: str, data: dict[str, Any]) -> None:
        """Merge ``data`` into the run's executor data (RFC 7396: None deletes a key)."""
        changed = self._execute(
            "UPDATE runs SET executor_data = json_patch(executor_data, ?) WHERE run_id = ?",
            (json.dumps(data), run_id),
        )
        self._require_change(changed, run_id)

    def record_missed(
        self, job: str, manifest_hash: str, scheduled_for: datetime, message: str
    ) -> RunRecord:
        """Record a scheduled time that was not run (state missed, trigger schedule)."""
        return self.create_run(
            job,
            manifest_hash,
            Trigger.SCHEDULE,
            scheduled_for=scheduled_for,
            state=RunState.MISSED,
            message=message,
        )

    def get_run(self, run_id: str) -> RunRecord | None:
        rows = self._query(f"SELECT {COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
        return record_from_row(rows[0]) if rows else None

    def active_runs(self, job: str | None = None) -> list[RunRecord]:
        """Pending and running runs, oldest first."""
        where = f"state IN {ACTIVE_SQL}"
        params: tuple[Any, ...] = ()
        if job is not None:
            where += " AND job = ?"
            params = (job,)
        rows = self._query(
            f"SELECT {COLUMNS} FROM runs WHERE {where} ORDER BY created_at, run_id", params
        )
        return [record_from_row(r) for r in rows]

    def history(self, job: str | None = None, limit: int = 50) -> list[RunRecord]:
        """Up to ``limit`` runs, newest first."""
        if job is None:
            rows = self._query(
                f"SELECT {COLUMNS} FROM runs ORDER BY created_at DESC, run_id DESC LIMIT ?",
                (limit,),
            )
        else:
            rows = self._query(
                f"SELECT {COLUMNS} FROM runs WHERE job = ? "
                "ORDER BY created_at DESC, run_id DESC LIMIT ?",
                (job, limit),
            )
        return [record_from_row(r) for r in rows]

    def last_run(self, job: str) -> RunRecord | None:
        runs = self.history(job, limit=1)
        return runs[0] if runs else None

    def last_finished_run(self, job: str, state: RunState | None = None) -> RunRecord | None:
        """The newest terminal run that actually ran (``missed`` skipped), of ``state``."""
        only = "AND state = ? " if state else ""
        rows = self._query(
            f"SELECT {COLUMNS} FROM runs WHERE job = ? AND state IN {TERMINAL_SQL} "
            f"AND state != ? {only}ORDER BY created_at DESC, run_id DESC LIMIT 1",
            (job, RunState.MISSED.value, *([str(state)] if state else [])),
        )
        return record_from_row(rows[0]) if rows else None

    def count_runs(self, job: str | None = None, state: RunState | None = None) -> int:
        clauses: list[str] = []
        params: list[Any] = []
        if job is not None:
            clauses.append("job = ?")
            params.append(job)
        if state is not None:
            clauses.append("state = ?")
            params.append(str(state))
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self._query(f"SELECT COUNT(*) AS n FROM runs{where}", tuple(params))
        return int(rows[0]["n"])

    def prune(self, job: str, keep: int) -> list[RunRecord]:
        """Delete the terminal runs of ``job`` beyond the newest ``keep``; return them."""
        if keep < 0:
            raise ValueError(f"keep must be >= 0, not {keep}")
        with self._transaction() as conn:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM runs WHERE job = ? AND state IN {TERMINAL_SQL} "
                "ORDER BY created_at DESC, run_id DESC LIMIT -1 OFFSET ?",
                (job, keep),
            ).fetchall()
            conn.executemany("DELETE FROM runs WHERE run_id = ?", [(r["run_id"],) for r in rows])
        return [record_from_row(r) for r in rows]

    def prune_and_remove_dirs(self, job: str, keep: int) -> list[RunRecord]:
        """``prune``, then delete each pruned run's directory (missing ones are skipped)."""
        pruned = self.prune(job, keep)
        for record in pruned:
            if record.run_dir:
                shutil.rmtree(record.run_dir, ignore_errors=True)
        return pruned

    def journal_mode(self) -> str:
        """The SQLite journal mode in force (``wal``; ``delete`` on a network file system)."""
        return str(self._query("PRAGMA journal_mode")[0][0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


for _name, _method in [*vars(JobStateQueries).items(), *vars(SQLiteStore).items()]:
    if callable(_method) and not _name.startswith("_") and _name not in ("close", "new_run_id"):
        setattr(SQLiteStore, _name, unavailable_on_sqlite_errors(_method))
