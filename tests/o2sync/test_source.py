"""mode: source with real git repositories (bare remotes made here) and the real aliBuild
building a tiny alidist-like recipe repository."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.tasks.o2sync.source import OOM_NEEDLE
from orchestrator.tasks.o2sync.state import _group_alive
from tests.conftest import wait_for
from tests.o2sync.conftest import (
    BRANCH,
    OOM_LINES,
    PACKAGE,
    Workdir,
    git,
    require_alibuild,
    run_task,
    source_spec,
    task_files,
)


def _installed(w: Workdir) -> str:
    """The newest installed contents.txt under sw/ (what the tiny recipe installs)."""
    found = sorted(w.work.glob("sw/*/O2Physics/*/contents.txt"), key=lambda p: p.stat().st_mtime)
    assert found, "nothing installed under sw/"
    return found[-1].read_text()


def _clean_and_unchanged(w: Workdir, heads: dict[str, str]) -> None:
    pkg = w.repo(PACKAGE)
    assert w.heads() == heads
    assert git(pkg, "symbolic-ref", "--short", "HEAD") == BRANCH
    assert git(pkg, "status", "--porcelain") == ""
    assert not (pkg / ".git" / "rebase-merge").exists()
    assert not (pkg / ".git" / "rebase-apply").exists()


def test_first_run_builds_then_nothing_moved_skips_the_build(
    workdir: Workdir, tmp_path: Path
) -> None:
    """With no good build recorded the real aliBuild builds and its `alienv enter` line is
    recorded; a second run with no repository moved skips the build and repeats that line."""
    spec = source_spec(workdir, require_alibuild())
    run = run_task(tmp_path, "o2src", spec)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.result["build"] == "built"
    assert run.result["repos_moved"] == {}
    assert run.result["alienv"] == f"alienv enter O2Physics/latest-{BRANCH}-o2"
    assert Path(run.result["build_log"]).read_text().count("alienv enter") >= 1
    assert "line 1" in _installed(workdir)

    run = run_task(tmp_path, "o2src", spec)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.result["build"] == "skipped"
    assert run.result["repos_moved"] == {}
    assert run.result["alienv"] == f"alienv enter O2Physics/latest-{BRANCH}-o2"
    assert "build skipped" in run.result["summary"]
    assert "aliBuild" not in run.stdout


def test_moved_repositories_are_updated_and_rebuilt(workdir: Workdir, tmp_path: Path) -> None:
    """Upstream commits in O2, alidist and O2Physics: O2/alidist fast-forward, the user's branch
    is rebased (their commit kept, on top), and aliBuild builds the new sources."""
    spec = source_spec(workdir, require_alibuild())
    assert run_task(tmp_path, "o2src", spec).returncode == 0
    before = workdir.heads()
    o2 = workdir.push_upstream("O2", "o2.txt", "O2 v2\n", "O2 update")
    workdir.set_recipe('echo "recipe v2"')
    workdir.push_upstream(PACKAGE, "analysis.txt", "line 1\nline 2\nupstream 3\n", "upstream")

    run = run_task(tmp_path, "o2src", spec)
    assert run.returncode == 0, run.stdout + run.stderr
    moved = run.result["repos_moved"]
    assert set(moved) == {"O2", "alidist", PACKAGE}
    assert moved[PACKAGE]["from"] == before[PACKAGE]
    assert workdir.heads()["O2"] == o2
    pkg = workdir.repo(PACKAGE)
    assert git(pkg, "log", "-1", "--format=%s") == "my work"
    assert git(pkg, "merge-base", "--is-ancestor", "upstream/master", "HEAD") == ""
    assert run.result["build"] == "built"
    assert run.result["alienv"] == f"alienv enter O2Physics/latest-{BRANCH}-o2"
    assert "upstream 3" in _installed(workdir)
    assert "recipe v2" in Path(run.result["build_log"]).read_text() + "".join(
        p.read_text() for p in workdir.work.glob("sw/BUILD/O2Physics-latest*/log")
    )


def test_rebase_conflict_aborts_cleanly_naming_the_files(workdir: Workdir, tmp_path: Path) -> None:
    """A rebase that conflicts is aborted: the run fails naming the conflicting file, the
    checkout's HEAD, branch and working tree are as before, O2 was not fast-forwarded, and no
    build ran."""
    pkg = workdir.repo(PACKAGE)
    (pkg / "analysis.txt").write_text("line 1\nmy change\n")
    git(pkg, "commit", "-q", "-am", "my change to line 2")
    workdir.push_upstream(PACKAGE, "analysis.txt", "line 1\ntheir change\n", "their change")
    workdir.push_upstream("O2", "o2.txt", "O2 v2\n", "O2 update")
    heads = workdir.heads()
    tree_before = (pkg / "analysis.txt").read_text()

    run = run_task(tmp_path, "o2src", source_spec(workdir, require_alibuild()))
    assert run.returncode == 1
    assert run.result["error"] == "rebase_conflict"
    assert run.result["conflicts"] == ["analysis.txt"]
    assert "conflicts in: analysis.txt" in run.stderr
    assert "is as it was" in run.stderr
    _clean_and_unchanged(workdir, heads)
    assert (pkg / "analysis.txt").read_text() == tree_before
    assert run.result["build"] is None
    assert not list(workdir.work.glob("sw/BUILD"))


def test_compiler_killed_is_reported_as_out_of_memory(workdir: Workdir, tmp_path: Path) -> None:
    """A build whose compiler is killed ('Killed signal terminated program cc1plus', here a
    recipe that prints it and fails) is reported as out of memory, with advice to lower -j."""
    workdir.set_recipe(OOM_LINES)
    run = run_task(tmp_path, "o2src", source_spec(workdir, require_alibuild(), jobs=16))
    assert run.returncode == 1, run.stdout
    assert run.result["error"] == "out_of_memory"
    assert run.result["build"] == "failed"
    assert "out of memory" in run.stderr
    assert OOM_NEEDLE in run.stderr
    assert "Lower spec.jobs (e.g. to 8)" in run.stderr
    # Not recorded as a good build: the next run builds again.
    state = tmp_path / "state" / "o2sync" / "o2src" / "state.json"
    assert not state.exists() or json.loads(state.read_text())["build"] is None


def test_low_disk_is_refused_before_anything_changes(workdir: Workdir, tmp_path: Path) -> None:
    """Less free space than min_free_gb: refused after fetching, before any checkout moves or
    aliBuild starts, with the free space named."""
    workdir.push_upstream("O2", "o2.txt", "O2 v2\n", "O2 update")
    workdir.push_upstream(PACKAGE, "analysis.txt", "line 1\nline 2\nline 3\n", "upstream")
    heads = workdir.heads()
    run = run_task(tmp_path, "o2src", source_spec(workdir, require_alibuild(), min_free_gb=1e9))
    assert run.returncode == 1
    assert run.result["error"] == "low_disk"
    assert "GB free under" in run.stderr
    assert "min_free_gb=1e+09" in run.stderr
    _clean_and_unchanged(workdir, heads)
    assert not list(workdir.work.glob("sw/*"))


def test_lock_prevents_two_concurrent_builds(workdir: Workdir, tmp_path: Path) -> None:
    """While one run builds in a work dir, a second run on the same work dir refuses at once,
    naming the holder; the first finishes its build."""
    workdir.set_recipe("sleep 4")
    spec = source_spec(workdir, require_alibuild())
    env, result_path = task_files(tmp_path, "first", spec)
    first = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.tasks.o2sync"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        lock = workdir.work / ".o2sync.lock"
        wait_for(lambda: lock.exists() and "build_pgid" in lock.read_text(), 20)
        t0 = time.monotonic()
        second = run_task(tmp_path, "second", spec)
        assert time.monotonic() - t0 < 10
        assert second.returncode == 1
        assert second.result["error"] == "locked"
        assert f"is in use by pid {first.pid}" in second.stderr
        assert first.wait(60) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert json.loads(result_path.read_text())["build"] == "built"


def test_dirty_checkout_is_refused_untouched(workdir: Workdir, tmp_path: Path) -> None:
    """Uncommitted changes in the package checkout: refused before fetching, files named."""
    pkg = workdir.repo(PACKAGE)
    (pkg / "mine.txt").write_text("work in progress\n")
    heads = workdir.heads()
    run = run_task(tmp_path, "o2src", source_spec(workdir, require_alibuild()))
    assert run.returncode == 1
    assert run.result["error"] == "dirty_checkout"
    assert "uncommitted changes in: mine.txt" in run.stderr
    assert workdir.heads() == heads
    assert (pkg / "mine.txt").read_text() == "work in progress\n"


def test_sigterm_during_a_build_stops_it_and_releases_the_work_dir(
    workdir: Workdir, tmp_path: Path
) -> None:
    """SIGTERM to the task (the daemon's timeout or cancel) stops aliBuild's whole process
    group, writes a 'terminated' result, and leaves the work dir free for the next run."""
    workdir.set_recipe("sleep 30")
    spec = source_spec(workdir, require_alibuild())
    env, result_path = task_files(tmp_path, "o2src", spec)
    task = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.tasks.o2sync"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        lock = workdir.work / ".o2sync.lock"
        info = wait_for(
            lambda: (
                lock.exists() and "build_pgid" in (text := lock.read_text()) and json.loads(text)
            ),
            20,
        )
        pgid = info["build_pgid"]
        time.sleep(0.5)  # aliBuild is now running the recipe's sleep
        task.send_signal(signal.SIGTERM)
        assert task.wait(20) == 128 + signal.SIGTERM
    finally:
        if task.poll() is None:
            task.kill()
            task.wait()
    assert not _group_alive(pgid, None), "a process of the build is still running"
    result = json.loads(result_path.read_text())
    assert result["error"] == "terminated"
    assert "build_pgid" not in json.loads(lock.read_text())


def test_a_build_left_running_by_a_killed_run_blocks_the_next(
    workdir: Workdir, tmp_path: Path
) -> None:
    """A build process group recorded in the work dir's lock and still alive (its run was
    SIGKILLed) makes the next run refuse, naming the group, instead of building beside it."""
    orphan = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        start = Path(f"/proc/{orphan.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        (workdir.work / ".o2sync.lock").write_text(
            json.dumps({"pid": 1, "build_pgid": orphan.pid, "build_leader_start": int(start)})
        )
        heads = workdir.heads()
        run = run_task(tmp_path, "o2src", source_spec(workdir, require_alibuild()))
        assert run.returncode == 1
        assert run.result["error"] == "locked"
        assert f"process group {orphan.pid}" in run.stderr
        assert "still running" in run.stderr
        assert workdir.heads() == heads
    finally:
        orphan.kill()
        orphan.wait()
    run = run_task(tmp_path, "o2src", source_spec(workdir, require_alibuild()))
    assert run.returncode == 0, run.stderr


def test_a_checkout_on_another_branch_is_refused_untouched(
    workdir: Workdir, tmp_path: Path
) -> None:
    """O2 on a branch other than the one the manifest follows: refused, nothing moved (it would
    otherwise fast-forward a branch the user did not name)."""
    git(workdir.repo("O2"), "switch", "-q", "-c", "experiment")
    workdir.push_upstream("O2", "o2.txt", "O2 v2\n", "O2 update")
    heads = workdir.heads()
    run = run_task(tmp_path, "o2src", source_spec(workdir, require_alibuild()))
    assert run.returncode == 1
    assert run.result["error"] == "bad_checkout"
    assert "O2 is on branch 'experiment', the manifest follows 'dev'" in run.stderr
    assert workdir.heads() == heads
