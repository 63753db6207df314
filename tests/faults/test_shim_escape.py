"""A job cannot outlive its run: processes it detaches with setsid (or a double fork) die at its
timeout, its cancel and its normal end, and a run shim SIGKILLed at any moment leaves nothing the
daemon cannot find and kill (issue 8, point 10)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.executors.base import RunSpec
from orchestrator.executors.local import LocalExecutor
from orchestrator.procinfo import (
    descendants,
    is_same_process,
    process_start_time,
    read_stat,
    session_members,
)
from orchestrator.store import RunRecord, RunState, SQLiteStore, Trigger
from tests.conftest import DaemonHarness, wait_for

# Forks a child that calls setsid and forks again: the grandchild, in a session of its own,
# writes its pid and sleeps; the child exits at once, so the grandchild is re-parented (to init,
# or to the run shim when it is the subreaper). The script returns once the pid is written.
DAEMONIZE = """\
import os, sys, time
pid_file = sys.argv[1]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        with open(pid_file + ".tmp", "w") as out:
            out.write(str(os.getpid()))
        os.rename(pid_file + ".tmp", pid_file)
        time.sleep(1000)
    os._exit(0)
while not os.path.exists(pid_file):
    time.sleep(0.01)
"""


def _escaping_job(root: Path, then: str) -> tuple[str, Path, Path]:
    """A bash script that detaches two processes, then runs ``then``; with the pid files of
    the one whose parent (bash) lives on (``setsid sleep``) and of the double-forked one."""
    script = root / "daemonize.py"
    script.write_text(DAEMONIZE)
    setsid_pid, daemon_pid = root / "setsid.pid", root / "daemonized.pid"
    text = (
        f"setsid sleep 1000 & echo $! > {setsid_pid}.tmp && mv {setsid_pid}.tmp {setsid_pid}\n"
        f"{sys.executable} {script} {daemon_pid}\n"
        f"{then}\n"
    )
    return text, setsid_pid, daemon_pid


def _escaped(pid_file: Path, shim_pid: int) -> tuple[int, int]:
    """The pid and start time in ``pid_file``, once that process has left the run's session
    (the shim's)."""
    wait_for(pid_file.exists, 10)
    pid = int(pid_file.read_text())
    stat = wait_for(lambda: (s := read_stat(pid)) is not None and s.sid != shim_pid and s, 5)
    return pid, stat.start_time


def _shim_pid(daemon: DaemonHarness, run_id: str) -> int:
    """The pid of the run's shim, which is also the id of the run's session."""

    def recorded() -> int | None:
        row = next((r for r in daemon.history("escaper") if r["run_id"] == run_id), None)
        return None if row is None else row["pid"]

    return int(wait_for(recorded, 5))


@contextlib.contextmanager
def _cleanup(pids: list[tuple[int, int]]) -> Iterator[None]:
    """Kill (by pid and start time) whatever the test started that the code under test left."""
    try:
        yield
    finally:
        for pid, start in pids:
            if is_same_process(pid, start):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _gone(pid: int) -> bool:
    """Dead and reaped: not even a zombie left in /proc."""
    return not Path(f"/proc/{pid}").exists()


def _write_job(daemon: DaemonHarness, script: str, policy: str = "") -> None:
    daemon.write(
        "escaper.yaml",
        f"""\
apiVersion: orchestrator/v1
kind: Command
name: escaper
{policy}
spec: {{command: [bash, -c, {json.dumps(script)}]}}
""",
    )


def _run_state(daemon: DaemonHarness, run_id: str) -> dict[str, object] | None:
    row = next((r for r in daemon.history("escaper") if r["run_id"] == run_id), None)
    return row if row is not None and row["finished_at"] else None


@pytest.mark.parametrize("end", ["timeout", "cancel"])
def test_detached_processes_die_at_timeout_and_cancel(
    daemon: DaemonHarness, tmp_path: Path, end: str
) -> None:
    """A run that ends by timeout or by cancel leaves neither a setsid'd process whose parent
    lived on nor a double-forked one: both are killed and reaped by the shim."""
    script, setsid_file, daemon_file = _escaping_job(tmp_path, "sleep 300")
    timeout = "policy: {timeout: 3s, kill_grace: 1s}" if end == "timeout" else ""
    _write_job(daemon, script, timeout)
    daemon.start()
    run_id = daemon.cli("trigger", "escaper").stdout.strip()
    shim = _shim_pid(daemon, run_id)
    setsid_proc, daemon_proc = _escaped(setsid_file, shim), _escaped(daemon_file, shim)
    with _cleanup([setsid_proc, daemon_proc]):
        if end == "cancel":
            daemon.cli("cancel", run_id)
        row = wait_for(lambda: _run_state(daemon, run_id), 15)
        assert row["state"] == ("timed_out" if end == "timeout" else "cancelled")
        # The shim reaps what it killed before it records the result: no zombie either.
        assert _gone(setsid_proc[0])
        assert _gone(daemon_proc[0])
        log = daemon.cli("logs", run_id).stdout
        assert "to processes the job left outside its process group" in log


def test_detached_processes_die_when_the_job_exits_zero(
    daemon: DaemonHarness, tmp_path: Path
) -> None:
    """A job that detaches processes and exits 0 succeeds and leaves nothing running."""
    script, setsid_file, daemon_file = _escaping_job(tmp_path, "exit 0")
    _write_job(daemon, script)
    daemon.start()
    run_id = daemon.cli("trigger", "escaper").stdout.strip()
    row = wait_for(lambda: _run_state(daemon, run_id), 15)
    pids = [int(setsid_file.read_text()), int(daemon_file.read_text())]
    with _cleanup([(pid, start) for pid in pids if (start := process_start_time(pid))]):
        assert row["state"] == "succeeded"
        assert all(_gone(pid) for pid in pids)


# --------------------------------------------------------------------- a shim SIGKILLed


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "runs.sqlite")
    yield s
    s.close()


def _start(store: SQLiteStore, executor: LocalExecutor, root: Path, argv: list[str]) -> RunRecord:
    """Start a run the way the daemon does: record first, then the shim."""
    run = store.create_run("job", "hash", Trigger.MANUAL)
    run_dir = root / "runs" / run.run_id
    spec = RunSpec(
        run_id=run.run_id,
        argv=argv,
        env=dict(os.environ),
        workdir=None,
        timeout_s=60.0,
        kill_grace_s=0.5,
        run_dir=run_dir,
        log_path=run_dir / "output.log",
    )
    store.set_run_paths(run.run_id, str(run_dir), str(spec.log_path))
    handle = executor.start(spec)
    assert store.mark_running(run.run_id, handle.pid, handle.pid_start_time)
    record = store.get_run(run.run_id)
    assert record is not None
    return record


def _lost(run: RunRecord) -> str:
    """Poll with a fresh executor (a restarted daemon) until the run is LOST; its message."""
    executor = LocalExecutor()
    outcome = wait_for(lambda: executor.poll(run), 10)
    assert outcome.state == RunState.LOST
    assert outcome.message is not None
    return outcome.message


def _first_child(pid: int) -> int | None:
    """The first child of ``pid`` that /proc lists, or None (yet)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", "rb") as children:
            words = children.read().split()
    except OSError:
        return None
    return int(words[0]) if words else None


def test_a_shim_killed_between_starting_the_job_and_recording_it_leaves_no_orphan(
    store: SQLiteStore, tmp_path: Path
) -> None:
    """A shim SIGKILLed the moment its job process exists, before child.json names it (and,
    once, before the shim has done anything): polling finds the run LOST and kills the job,
    found through the shim's session, so no process of the run is left."""
    if not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists():
        pytest.skip("this kernel has no /proc/PID/task/TID/children to catch the moment")
    executor = LocalExecutor()
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    window_hits = 0
    for attempt in range(6):
        run = _start(store, executor, tmp_path, argv)
        assert run.pid is not None
        assert run.pid_start_time is not None
        shim = run.pid
        job: tuple[int, int | None] | None = None
        if attempt > 0:
            child = wait_for(lambda shim=shim: _first_child(shim), 10, interval_s=0)
            job = (child, process_start_time(child))
        os.kill(shim, signal.SIGKILL)
        run_dir = Path(str(run.run_dir))
        window_hits += job is not None and not (run_dir / "child.json").exists()
        try:
            message = _lost(run)
            if job is not None:
                assert "orphaned job was killed" in message
                wait_for(lambda job=job: not is_same_process(*job), 5)
            session_left = [p for p in session_members(shim) if not p.exited and p.pid != shim]
            assert session_left == []
        finally:
            if job is not None and is_same_process(*job):
                os.kill(job[0], signal.SIGKILL)
            executor.poll(run)  # reap the shim
    # Every kill after the first aimed at the moment between the fork and child.json (the
    # exec and an fsync long); if none landed there the test proved nothing.
    assert window_hits >= 1


def test_a_shim_killed_after_its_job_detached_a_process_leaves_no_orphan(
    store: SQLiteStore, tmp_path: Path
) -> None:
    """Processes that left the run's session are listed in child.json as the shim sees them,
    so a daemon that finds the shim SIGKILLed kills them too."""
    script, setsid_file, daemon_file = _escaping_job(tmp_path, "sleep 300")
    executor = LocalExecutor()
    run = _start(store, executor, tmp_path, ["bash", "-c", script])
    assert run.pid is not None
    setsid_proc = _escaped(setsid_file, run.pid)
    daemon_proc = _escaped(daemon_file, run.pid)
    child_file = Path(str(run.run_dir)) / "child.json"

    def recorded() -> bool:
        escaped = json.loads(child_file.read_text()).get("escaped", [])
        return {e["pid"] for e in escaped} >= {setsid_proc[0], daemon_proc[0]}

    with _cleanup([setsid_proc, daemon_proc]):
        wait_for(recorded, 5)
        assert run.pid is not None
        os.kill(run.pid, signal.SIGKILL)
        assert "orphaned job was killed" in _lost(run)
        wait_for(lambda: not is_same_process(*setsid_proc), 5)
        wait_for(lambda: not is_same_process(*daemon_proc), 5)
        executor.poll(run)


def test_the_shim_adopts_and_reaps_double_forked_orphans(
    store: SQLiteStore, tmp_path: Path
) -> None:
    """The shim is the child subreaper: a double-forked process re-parents to it, not to init,
    and the intermediate process that exited is reaped while the job still runs."""
    script, _setsid_file, daemon_file = _escaping_job(tmp_path, "sleep 300")
    executor = LocalExecutor()
    run = _start(store, executor, tmp_path, ["bash", "-c", script])
    assert run.pid is not None
    daemon_proc = _escaped(daemon_file, run.pid)
    with _cleanup([daemon_proc]):
        stat = read_stat(daemon_proc[0])
        assert stat is not None
        assert stat.ppid == run.pid
        time.sleep(1.5)  # past the shim's first walks of the tree
        assert [p for p in descendants(run.pid) if p.exited] == []
        executor.cancel(run)
        outcome = wait_for(lambda: executor.poll(run), 10)
        assert outcome.state == RunState.CANCELLED
        assert _gone(daemon_proc[0])
