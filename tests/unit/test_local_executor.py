"""The run shim and the local executor with real processes: outcomes, timeouts, re-adoption."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import procinfo
from orchestrator.executors.base import Executor, Outcome, RunSpec
from orchestrator.executors.local import LocalExecutor
from orchestrator.procinfo import (
    descendants,
    is_same_process,
    process_start_time,
    process_state,
    read_stat,
)
from orchestrator.store import RunRecord, RunState, SQLiteStore, Trigger

DEADLINE_S = 10.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "runs.db")
    yield s
    s.close()


def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Runs:
    """Starts runs through a real LocalExecutor and a real store, as the daemon does."""

    def __init__(self, tmp_path: Path, store: SQLiteStore) -> None:
        self.tmp_path = tmp_path
        self.store = store
        self.executor = LocalExecutor()

    def start(
        self,
        argv: list[str],
        timeout_s: float = 30.0,
        kill_grace_s: float = 0.5,
        workdir: str | None = None,
        env: dict[str, str] | None = None,
    ) -> tuple[RunRecord, RunSpec]:
        run = self.store.create_run("job", "hash", Trigger.MANUAL)
        run_dir = self.tmp_path / "runs" / run.run_id
        spec = RunSpec(
            run_id=run.run_id,
            argv=argv,
            env=dict(os.environ) if env is None else env,
            workdir=workdir,
            timeout_s=timeout_s,
            kill_grace_s=kill_grace_s,
            run_dir=run_dir,
            log_path=run_dir / "output.log",
        )
        self.store.set_run_paths(run.run_id, str(run_dir), str(spec.log_path))
        handle = self.executor.start(spec)
        assert self.store.mark_running(run.run_id, handle.pid, handle.pid_start_time)
        record = self.store.get_run(run.run_id)
        assert record is not None
        return record, spec

    def outcome(self, run: RunRecord, executor: Executor | None = None) -> Outcome:
        executor = executor or self.executor
        result: list[Outcome] = []

        def ended() -> bool:
            outcome = executor.poll(run)
            if outcome is not None:
                result.append(outcome)
            return bool(result)

        wait_for(ended, f"run {run.run_id} to end")
        return result[0]


@pytest.fixture
def runs(tmp_path: Path, store: SQLiteStore) -> Runs:
    return Runs(tmp_path, store)


def test_local_executor_implements_protocol() -> None:
    """LocalExecutor satisfies the Executor protocol the daemon codes against."""
    assert isinstance(LocalExecutor(), Executor)


@pytest.mark.parametrize(
    ("code", "state"), [(0, RunState.SUCCEEDED), (3, RunState.FAILED)], ids=["exit0", "exit3"]
)
def test_exit_code_is_recorded_and_output_lands_in_the_log(
    runs: Runs, code: int, state: RunState
) -> None:
    """The job's exit code and state reach result.json, and stdout/stderr land in the log."""
    run, spec = runs.start(["sh", "-c", f"echo out-line; echo err-line >&2; exit {code}"])
    outcome = runs.outcome(run)
    assert (outcome.state, outcome.exit_code) == (state, code)
    log = spec.log_path.read_text()
    assert "out-line" in log
    assert "err-line" in log
    assert (spec.run_dir / "result.json").is_file()
    assert (spec.run_dir / "shim.json").is_file()


def test_environment_and_workdir_are_the_specs(runs: Runs, tmp_path: Path) -> None:
    """The job runs with exactly the spec's environment, in its workdir (run_dir by default)."""
    env = {"PATH": os.environ["PATH"], "ORCH_TEST_VALUE": "a b 'c'"}
    run, spec = runs.start(
        ["sh", "-c", 'echo "v=$ORCH_TEST_VALUE home=${HOME-unset}"; pwd'], env=env
    )
    assert runs.outcome(run).state == RunState.SUCCEEDED
    log = spec.log_path.read_text()
    assert "v=a b 'c' home=unset" in log
    assert str(spec.run_dir) in log
    run, spec = runs.start(["pwd"], workdir=str(tmp_path))
    assert runs.outcome(run).state == RunState.SUCCEEDED
    assert spec.log_path.read_text().strip().endswith(str(tmp_path))


def _read_pid_when_written(path: Path) -> tuple[int, int]:
    wait_for(lambda: path.exists() and path.read_text().strip() != "", f"{path} to be written")
    pid = int(path.read_text().strip())
    start = process_start_time(pid)
    assert start is not None
    return pid, start


def test_timeout_kills_child_and_background_grandchild(runs: Runs, tmp_path: Path) -> None:
    """At timeout the whole group dies, even processes that ignore SIGTERM (KILL after grace)."""
    gc_file = tmp_path / "gc.pid"
    script = f"trap '' TERM; sleep 30 & echo $! > {gc_file}; sleep 30"
    run, spec = runs.start(["sh", "-c", script], timeout_s=0.5, kill_grace_s=0.3)
    gc_pid, gc_start = _read_pid_when_written(gc_file)
    outcome = runs.outcome(run)
    assert outcome.state == RunState.TIMED_OUT
    assert outcome.exit_code == -signal.SIGKILL
    assert outcome.message is not None
    assert "timed out" in outcome.message
    assert not is_same_process(gc_pid, gc_start)
    assert "timed out" in spec.log_path.read_text()


def test_background_stragglers_are_killed_after_a_normal_exit(runs: Runs, tmp_path: Path) -> None:
    """A job that exits 0 leaving a background process in its group: the process is killed."""
    gc_file = tmp_path / "gc.pid"
    run, _ = runs.start(["sh", "-c", f"sleep 30 & echo $! > {gc_file}; exit 0"])
    outcome = runs.outcome(run)
    assert outcome.state == RunState.SUCCEEDED
    gc_pid = int(gc_file.read_text())
    wait_for(lambda: not is_same_process(gc_pid, None), "the straggler to die", 2.0)


def test_cancel_records_cancelled_and_kills_the_group(runs: Runs, tmp_path: Path) -> None:
    """cancel() SIGTERMs the shim, which stops the job's group and records cancelled."""
    gc_file = tmp_path / "gc.pid"
    run, _ = runs.start(["sh", "-c", f"sleep 30 & echo $! > {gc_file}; wait"])
    gc_pid, gc_start = _read_pid_when_written(gc_file)
    assert runs.executor.poll(run) is None
    runs.executor.cancel(run)
    outcome = runs.outcome(run)
    assert outcome.state == RunState.CANCELLED
    assert outcome.exit_code == -signal.SIGTERM
    assert not is_same_process(gc_pid, gc_start)


def test_command_not_found_fails_with_127_and_a_message(runs: Runs) -> None:
    """A missing command ends failed, exit code 127, with a message in the result and the log."""
    run, spec = runs.start(["/nonexistent/orch-no-such-command", "x"])
    outcome = runs.outcome(run)
    assert (outcome.state, outcome.exit_code) == (RunState.FAILED, 127)
    assert outcome.message is not None
    assert "command not found" in outcome.message
    assert "orch-no-such-command" in spec.log_path.read_text()


def test_not_executable_fails_with_126(runs: Runs, tmp_path: Path) -> None:
    """A command that exists but is not executable ends failed with exit code 126."""
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    if os.access(script, os.X_OK):  # pragma: no cover - root on a file system ignoring modes
        pytest.skip("this file system lets the current user execute a 0644 file")
    run, _ = runs.start([str(script)])
    outcome = runs.outcome(run)
    assert (outcome.state, outcome.exit_code) == (RunState.FAILED, 126)
    assert outcome.message is not None
    assert "not executable" in outcome.message


def test_missing_workdir_fails_with_127_naming_it(runs: Runs, tmp_path: Path) -> None:
    """A workdir that does not exist ends failed with exit code 127 and a message naming it."""
    missing = str(tmp_path / "no-such-dir")
    run, spec = runs.start(["true"], workdir=missing)
    outcome = runs.outcome(run)
    assert (outcome.state, outcome.exit_code) == (RunState.FAILED, 127)
    assert outcome.message is not None
    assert missing in outcome.message
    assert missing in spec.log_path.read_text()


def test_restarted_daemon_readopts_a_running_run_and_gets_its_exit_code(
    runs: Runs, store: SQLiteStore
) -> None:
    """A fresh LocalExecutor follows a run started by another one and reports its real exit code."""
    run, spec = runs.start(["sh", "-c", "while [ ! -e go ]; do sleep 0.02; done; exit 7"])
    readopting = LocalExecutor()  # the restarted daemon: knows the run only from the store
    stored = store.active_runs()
    assert [r.run_id for r in stored] == [run.run_id]
    assert readopting.poll(stored[0]) is None
    (spec.run_dir / "go").touch()
    outcome = runs.outcome(stored[0], executor=readopting)
    assert (outcome.state, outcome.exit_code) == (RunState.FAILED, 7)
    assert store.finish_run(run.run_id, outcome.state, outcome.exit_code, outcome.message)
    runs.executor.poll(run)  # the first executor reaps its child


def test_a_shim_killed_without_result_is_lost(runs: Runs, tmp_path: Path) -> None:
    """A run whose shim was SIGKILLed (no result.json) is reported LOST with a message, and
    its orphaned job is killed so that a retry never runs beside it."""
    job_pid_file = tmp_path / "job.pid"
    run, spec = runs.start(["sh", "-c", f"echo $$ > {job_pid_file}; exec sleep 30"])
    job_pid, _ = _read_pid_when_written(job_pid_file)
    try:
        assert run.pid is not None
        os.kill(run.pid, signal.SIGKILL)
        outcome = runs.outcome(run, executor=LocalExecutor())
        assert outcome.state == RunState.LOST
        assert outcome.exit_code is None
        assert outcome.message is not None
        assert "result.json" in outcome.message
        assert not (spec.run_dir / "result.json").exists()
        assert "orphaned job was killed" in outcome.message
        wait_for(lambda: not is_same_process(job_pid, None), "the orphaned job to die", 5)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job_pid, signal.SIGKILL)  # in case the executor did not
        runs.executor.poll(run)


def test_pid_reuse_guard_ignores_a_process_with_another_start_time(
    runs: Runs, store: SQLiteStore
) -> None:
    """A live process whose start time differs from the record's is not the run's: no signal."""
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        start = process_start_time(stranger.pid)
        assert start is not None
        assert is_same_process(stranger.pid, start)
        assert not is_same_process(stranger.pid, start + 1)
        run = store.create_run("job", "hash", Trigger.MANUAL)
        store.set_run_paths(run.run_id, str(runs.tmp_path / "empty"), "/dev/null")
        store.mark_running(run.run_id, stranger.pid, start + 1)
        record = store.get_run(run.run_id)
        assert record is not None
        executor = LocalExecutor()
        executor.cancel(record)
        outcome = executor.poll(record)
        assert outcome is not None
        assert outcome.state == RunState.LOST
        time.sleep(0.05)
        assert stranger.poll() is None  # never signalled
    finally:
        stranger.kill()
        stranger.wait()


def test_process_start_time_parses_a_command_name_with_spaces_and_parentheses(
    tmp_path: Path,
) -> None:
    """/proc/PID/stat is parsed after the last ')' so an odd command name cannot shift fields."""
    sleep_path = shutil.which("sleep")
    assert sleep_path is not None
    odd = tmp_path / "a) b (c) 1 2"
    shutil.copy(sleep_path, odd)
    odd.chmod(0o755)
    proc = subprocess.Popen([str(odd), "30"])
    try:
        wait_for(lambda: process_state(proc.pid) in ("S", "R"), "the odd process to run")
        start = process_start_time(proc.pid)
        own = process_start_time(os.getpid())
        assert start is not None
        assert own is not None
        assert start >= own
        assert is_same_process(proc.pid, start)
    finally:
        proc.kill()
        proc.wait()
    assert process_start_time(proc.pid) is None or not is_same_process(proc.pid, start)


def test_a_zombie_counts_as_gone() -> None:
    """An exited but unreaped child is not alive for is_same_process."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    start = process_start_time(proc.pid)
    wait_for(lambda: process_state(proc.pid) == "Z", "the child to become a zombie")
    assert not is_same_process(proc.pid, start)
    proc.wait()
    assert process_start_time(proc.pid) is None


def test_start_reports_the_shim_pid_and_start_time(runs: Runs) -> None:
    """start() returns the shim's pid and start time, the same ones shim.json records."""
    run, spec = runs.start(["sleep", "0.2"])
    assert run.pid is not None
    assert run.pid_start_time is not None
    assert runs.outcome(run).state == RunState.SUCCEEDED
    shim = json.loads((spec.run_dir / "shim.json").read_text())
    assert (shim["pid"], shim["start_time"]) == (run.pid, run.pid_start_time)


def test_cancel_right_after_start_still_records_cancelled(runs: Runs) -> None:
    """A cancel that arrives while the shim is still starting up is not lost."""
    run, _ = runs.start(["sleep", "30"])
    runs.executor.cancel(run)
    outcome = runs.outcome(run)
    assert outcome.state == RunState.CANCELLED


def test_shim_json_names_the_session_that_holds_every_job_process(
    runs: Runs, tmp_path: Path
) -> None:
    """shim.json, written before the job starts, records the shim's session, which the shim
    leads and the job's processes share (how a daemon finds them if the shim dies)."""
    gc_file = tmp_path / "gc.pid"
    run, spec = runs.start(["sh", "-c", f"sleep 30 & echo $! > {gc_file}; wait"])
    gc_pid, _ = _read_pid_when_written(gc_file)
    shim = json.loads((spec.run_dir / "shim.json").read_text())
    assert shim["sid"] == shim["pid"] == run.pid
    gc = read_stat(gc_pid)
    assert gc is not None
    assert gc.sid == run.pid
    runs.executor.cancel(run)
    assert runs.outcome(run).state == RunState.CANCELLED


def test_descendants_by_children_files_and_by_scan_agree(tmp_path: Path) -> None:
    """The /proc children-file walk and the whole-/proc scan find the same process tree,
    grandchildren included, with their parents, groups and sessions."""
    proc = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"], start_new_session=True)

    def subtree(found: list[Any]) -> list[int]:
        # the test's own tree: the suite's other children (a session's sshd, a Slurm
        # cluster) may come and go between the two reads
        return sorted(p.pid for p in found if proc.pid in (p.pid, p.ppid))

    try:
        wait_for(
            lambda: len(subtree(descendants(os.getpid()))) == 3, "sh and its two sleeps to start"
        )
        by_files = subtree(descendants(os.getpid()))
        by_scan = subtree(procinfo._descendants_by_scan(os.getpid()))
        assert by_files == by_scan
        tree = {p.pid: p for p in descendants(os.getpid())}
        assert tree[proc.pid].ppid == os.getpid()
        assert tree[proc.pid].sid == proc.pid
        assert sum(1 for p in tree.values() if p.ppid == proc.pid) == 2
        assert all(p.pgid == proc.pid for p in tree.values() if p.ppid == proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
