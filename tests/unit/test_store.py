"""The SQLite run store: round trips, the exactly-once finish, pruning, schema versions, WAL."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestrator.errors import StoreError
from orchestrator.store import (
    SCHEMA_VERSION,
    TERMINAL_STATES,
    RunRecord,
    RunState,
    SQLiteStore,
    Store,
    Trigger,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "state" / "runs.db")
    yield s
    s.close()


def test_implements_protocol(store: SQLiteStore) -> None:
    """SQLiteStore satisfies the Store protocol the daemon codes against."""
    assert isinstance(store, Store)


def test_run_id_is_readable_and_time_sortable(store: SQLiteStore) -> None:
    """Run ids read as UTC time plus 6 hex digits, and sort in time order."""
    early = store.new_run_id(datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC))
    late = store.new_run_id(datetime(2024, 5, 1, 12, 0, 1, tzinfo=UTC))
    assert re.fullmatch(r"20240501T120000Z-[0-9a-f]{6}", early)
    assert early < late


def test_round_trip_of_a_run_through_its_life(store: SQLiteStore) -> None:
    """A run created, given paths, marked running and finished reads back field for field."""
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    run = store.create_run("backup", "h1", Trigger.SCHEDULE, scheduled_for=when)
    assert run.state == RunState.PENDING
    assert run.attempt == 1
    assert run.executor == "local"
    assert run.created_at.tzinfo is not None
    store.set_run_paths(run.run_id, "/tmp/r", "/tmp/r/log")
    started = datetime(2024, 5, 1, 12, 0, 1, tzinfo=UTC)
    assert store.mark_running(run.run_id, 1234, 5678, started_at=started)
    assert not store.mark_running(run.run_id, 1, 1)  # only from pending
    assert store.finish_run(run.run_id, RunState.FAILED, exit_code=3, message="exit 3")
    got = store.get_run(run.run_id)
    assert got is not None
    assert (got.state, got.exit_code, got.message) == (RunState.FAILED, 3, "exit 3")
    assert (got.pid, got.pid_start_time, got.started_at) == (1234, 5678, started)
    assert (got.run_dir, got.log_path, got.scheduled_for) == ("/tmp/r", "/tmp/r/log", when)
    assert got.finished_at is not None
    assert got.is_terminal
    as_json = got.to_json()
    assert set(as_json) == {f for f in RunRecord.__dataclass_fields__}
    assert as_json["scheduled_for"] == "2024-05-01T12:00:00+00:00"
    assert as_json["state"] == "failed"


def test_result_and_executor_data_merge(store: SQLiteStore) -> None:
    """update_result/update_executor_data and finish_run's result merge top-level keys."""
    run = store.create_run("sync", "h", Trigger.MANUAL)
    store.update_result(run.run_id, {"files": 3, "bytes": 10})
    store.update_result(run.run_id, {"bytes": 20})
    store.update_executor_data(run.run_id, {"slurm_job_id": "42"})
    store.finish_run(run.run_id, RunState.SUCCEEDED, exit_code=0, result={"done": True})
    got = store.get_run(run.run_id)
    assert got is not None
    assert got.result == {"files": 3, "bytes": 20, "done": True}
    assert got.executor_data == {"slurm_job_id": "42"}


def test_changing_an_unknown_run_raises(store: SQLiteStore) -> None:
    """Methods that change one run raise StoreError for a run id that does not exist."""
    with pytest.raises(StoreError, match="no run"):
        store.set_run_paths("nope", "/a", "/a/log")
    with pytest.raises(StoreError):
        store.update_result("nope", {})
    assert store.get_run("nope") is None
    assert not store.finish_run("nope", RunState.LOST)


def test_finish_run_refuses_a_non_terminal_state(store: SQLiteStore) -> None:
    """finish_run with an active state is a programming error (ValueError)."""
    run = store.create_run("a", "h", Trigger.MANUAL)
    with pytest.raises(ValueError, match="needs a terminal state"):
        store.finish_run(run.run_id, RunState.RUNNING)


def _race_to_finish(stores: list[SQLiteStore], run_id: str, n_threads: int) -> list[RunState]:
    """Start n threads that all call finish_run on one run at once; return the winners' states."""
    barrier = threading.Barrier(n_threads)
    states = sorted(TERMINAL_STATES - {RunState.MISSED})
    wins: list[RunState] = []

    def finish(i: int) -> None:
        barrier.wait()
        state = states[i % len(states)]
        if stores[i % len(stores)].finish_run(run_id, state, exit_code=i):
            wins.append(state)

    threads = [threading.Thread(target=finish, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return wins


def test_finish_run_is_exactly_once_under_concurrent_callers(tmp_path: Path) -> None:
    """Of many threads (on two connections) finishing one run, exactly one wins."""
    path = tmp_path / "runs.db"
    first, second = SQLiteStore(path), SQLiteStore(path)
    try:
        for _ in range(5):
            run = first.create_run("race", "h", Trigger.SCHEDULE)
            first.mark_running(run.run_id, 1, 1)
            wins = _race_to_finish([first, second], run.run_id, 16)
            assert len(wins) == 1
            got = second.get_run(run.run_id)
            assert got is not None
            assert got.state == wins[0]
    finally:
        first.close()
        second.close()


def test_history_order_and_queries(store: SQLiteStore) -> None:
    """history is newest first; last_run, last_finished_run, active_runs, count_runs agree."""
    runs = [store.create_run("j", "h", Trigger.SCHEDULE) for _ in range(3)]
    other = store.create_run("k", "h", Trigger.MANUAL)
    store.finish_run(runs[0].run_id, RunState.SUCCEEDED, exit_code=0)
    missed = store.record_missed("j", "h", datetime.now(UTC) - timedelta(hours=1), "daemon down")
    assert missed.state == RunState.MISSED
    assert missed.trigger == Trigger.SCHEDULE
    assert missed.finished_at is not None
    history = store.history("j")
    assert [r.run_id for r in history] == [missed.run_id] + [r.run_id for r in reversed(runs)]
    assert store.history(limit=2)[0].run_id == missed.run_id
    last = store.last_run("j")
    assert last is not None
    assert last.run_id == missed.run_id
    finished = store.last_finished_run("j")
    assert finished is not None
    assert finished.run_id == runs[0].run_id
    assert [r.run_id for r in store.active_runs("j")] == [runs[1].run_id, runs[2].run_id]
    assert len(store.active_runs()) == 3
    assert other.run_id in {r.run_id for r in store.active_runs()}
    assert store.count_runs() == 5
    assert store.count_runs("j", RunState.PENDING) == 2
    assert store.last_run("absent") is None


def test_prune_deletes_only_the_oldest_terminal_runs(store: SQLiteStore, tmp_path: Path) -> None:
    """prune keeps the newest `keep` finished runs, never touches active ones, returns the rest."""
    finished = []
    for i in range(5):
        run = store.create_run("p", "h", Trigger.SCHEDULE)
        run_dir = tmp_path / "runs" / run.run_id
        run_dir.mkdir(parents=True)
        store.set_run_paths(run.run_id, str(run_dir), str(run_dir / "log"))
        store.finish_run(run.run_id, RunState.SUCCEEDED, exit_code=i)
        finished.append(run.run_id)
    active = store.create_run("p", "h", Trigger.SCHEDULE)
    store.create_run("q", "h", Trigger.SCHEDULE)
    pruned = store.prune_and_remove_dirs("p", keep=2)
    assert sorted(r.run_id for r in pruned) == sorted(finished[:3])
    assert all(not Path(r.run_dir or "").exists() for r in pruned)
    left = {r.run_id for r in store.history("p")}
    assert left == {active.run_id, *finished[3:]}
    assert store.prune("p", keep=2) == []
    assert store.count_runs("q") == 1


def test_job_state_round_trip(store: SQLiteStore) -> None:
    """Job state stores JSON values per (job, key) and lists one key across jobs."""
    assert store.get_job_state("a", "scheduled_through", "dflt") == "dflt"
    store.set_job_state("a", "scheduled_through", "2024-05-01T00:00:00+00:00")
    store.set_job_state("a", "scheduled_through", "2024-05-02T00:00:00+00:00")
    store.set_job_state("b", "scheduled_through", "2024-05-03T00:00:00+00:00")
    store.set_job_state("b", "first_seen", {"at": 1, "list": [1, 2]})
    assert store.get_job_state("a", "scheduled_through") == "2024-05-02T00:00:00+00:00"
    assert store.get_job_state("b", "first_seen") == {"at": 1, "list": [1, 2]}
    assert store.all_job_state("scheduled_through") == {
        "a": "2024-05-02T00:00:00+00:00",
        "b": "2024-05-03T00:00:00+00:00",
    }


def test_naive_datetimes_are_refused(store: SQLiteStore) -> None:
    """A naive datetime is rejected instead of being silently read as local time."""
    with pytest.raises(ValueError, match="naive"):
        store.create_run("a", "h", Trigger.SCHEDULE, scheduled_for=datetime(2024, 1, 1))


def test_wal_mode_is_on_and_data_survives_reopen(tmp_path: Path) -> None:
    """The store runs in WAL mode and a second opening sees what the first wrote."""
    path = tmp_path / "runs.db"
    with SQLiteStore(path) as s:
        assert s.journal_mode() == "wal"
        run = s.create_run("a", "h", Trigger.MANUAL)
        with SQLiteStore(path) as reader:  # the CLI opening the file while the daemon runs
            got = reader.get_run(run.run_id)
            assert got is not None
            assert got.job == "a"
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    """A file with another schema version is refused, naming the file and both versions."""
    path = tmp_path / "runs.db"
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError) as info:
        SQLiteStore(path)
    text = str(info.value)
    assert str(path) in text
    assert "99" in text
    assert str(SCHEMA_VERSION) in text


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    """Opening a file that is not SQLite raises StoreError naming the file."""
    path = tmp_path / "runs.db"
    path.write_bytes(b"this is not a database, just some text" * 100)
    with pytest.raises(StoreError, match=re.escape(str(path))):
        SQLiteStore(path)
