"""mode: cvmfs on a CVMFS-like directory tree (the one fake: CVMFS cannot be mounted here), with
a small real probe script standing in for alienv (see conftest)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from orchestrator.tasks.o2sync.cli import o2
from tests.o2sync.conftest import CvmfsTree, cvmfs_spec, manifest, run_task

A, B, C, D = (
    "daily-20250512-0328-1",
    "daily-20250513-0328-1",
    "daily-20250514-0328-1",
    "daily-20250515-0328-1",
)


def _pointer(tmp_path: Path) -> tuple[str, str]:
    link = tmp_path / "ptr" / "O2Physics-current"
    env = tmp_path / "ptr" / "O2Physics.env"
    return os.readlink(link), env.read_text()


def _env_tag(tmp_path: Path) -> str:
    for line in (tmp_path / "ptr" / "O2Physics.env").read_text().splitlines():
        if line.startswith("O2PHYSICS_TAG="):
            return line.split("=", 1)[1]
    raise AssertionError("no O2PHYSICS_TAG line")


def _spec(tree: CvmfsTree, probe: Path, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return cvmfs_spec(tree, probe, tmp_path / "ptr", **extra)


def test_newest_tag_is_promoted_after_its_probe_passes(
    cvmfs_tree: CvmfsTree, probe_script: Path, tmp_path: Path
) -> None:
    """The newest tag with a payload is probed and, once it passes, both pointers name it; a
    later run promotes a newer tag and reports the previous one."""
    for tag in (A, B):
        cvmfs_tree.publish(tag)
    cvmfs_tree.publish(C, payload=False)  # announced, payload not yet published
    spec = _spec(cvmfs_tree, probe_script, tmp_path)
    run = run_task(tmp_path, "o2cv", spec)
    assert run.returncode == 0, run.stderr
    assert run.result["promoted"] == B
    assert run.result["previous"] is None
    assert run.result["incomplete"] == [C]
    assert run.result["error"] is None
    link, env = _pointer(tmp_path)
    assert link == str(cvmfs_tree.payload(B))
    assert "O2PHYSICS_VERSION=VO_ALICE@O2Physics::" + B in env
    assert f"alienv enter VO_ALICE@O2Physics::{B}" in env
    assert f"probe {C}" not in run.stdout  # a tag without payload is never probed

    cvmfs_tree.publish(C)
    run = run_task(tmp_path, "o2cv", spec)
    assert run.returncode == 0, run.stderr
    assert (run.result["promoted"], run.result["previous"]) == (C, B)
    assert run.result["kept"] == [B, C]
    assert _env_tag(tmp_path) == C

    run = run_task(tmp_path, "o2cv", spec)
    assert run.returncode == 0
    assert run.result["promoted"] is None
    assert run.result["summary"] == f"up to date: O2Physics {C}"


def test_failing_probe_leaves_pointer_and_records_the_rejected_tag(
    cvmfs_tree: CvmfsTree, probe_script: Path, tmp_path: Path
) -> None:
    """A tag whose probe fails is recorded as rejected, the run fails naming it, the pointer is
    byte-for-byte as before, and later runs skip the tag without probing it again."""
    cvmfs_tree.publish(A)
    spec = _spec(cvmfs_tree, probe_script, tmp_path)
    assert run_task(tmp_path, "o2cv", spec).returncode == 0
    before = _pointer(tmp_path)

    cvmfs_tree.publish(B, good=False)  # payload there, but the environment does not load
    run = run_task(tmp_path, "o2cv", spec)
    assert run.returncode == 1
    assert run.result["error"] == "verification_failed"
    assert [r["tag"] for r in run.result["rejected"]] == [B]
    assert "not (fully) published" in run.result["rejected"][0]["reason"]
    assert run.result["current"] == A
    assert run.result["promoted"] is None
    assert f"no tag promoted: {B} failed verification" in run.stderr
    assert "the pointer still names " + A in run.stderr
    assert _pointer(tmp_path) == before

    run = run_task(tmp_path, "o2cv", spec)
    assert run.returncode == 0
    assert f"probe {B}" not in run.stdout
    assert run.result["skipped_rejected"] == [B]
    assert _pointer(tmp_path) == before


def test_a_failing_newest_tag_falls_back_to_the_next_newer_one(
    cvmfs_tree: CvmfsTree, probe_script: Path, tmp_path: Path
) -> None:
    """With the newest tag broken, the next newest that is still newer than the current tag is
    probed and promoted; the broken one is listed as rejected and the run succeeds."""
    cvmfs_tree.publish(A)
    spec = _spec(cvmfs_tree, probe_script, tmp_path)
    assert run_task(tmp_path, "o2cv", spec).returncode == 0
    cvmfs_tree.publish(B)
    cvmfs_tree.publish(C, good=False)
    run = run_task(tmp_path, "o2cv", spec)
    assert run.returncode == 0, run.stderr
    assert (run.result["promoted"], run.result["previous"]) == (B, A)
    assert [r["tag"] for r in run.result["rejected"]] == [C]
    assert _env_tag(tmp_path) == B


def test_missing_cvmfs_fails_clearly_and_changes_nothing(
    probe_script: Path, tmp_path: Path
) -> None:
    """An unreadable tag directory (CVMFS not mounted) fails with a message saying so."""
    tree = CvmfsTree(tmp_path / "not-mounted")
    run = run_task(tmp_path, "o2cv", _spec(tree, probe_script, tmp_path))
    assert run.returncode == 1
    assert run.result["error"] == "no_listing"
    assert "Is CVMFS mounted" in run.stderr
    assert not (tmp_path / "ptr").exists()


def _cli(tmp_path: Path, *args: str) -> Any:
    result = CliRunner().invoke(
        o2,
        [*args, "--jobs-dir", str(tmp_path / "jobs.d"), "--state-dir", str(tmp_path / "state")],
        catch_exceptions=False,
    )
    return result


def test_rollback_switches_back_and_the_next_run_does_not_undo_it(
    cvmfs_tree: CvmfsTree, probe_script: Path, tmp_path: Path
) -> None:
    """`o2 rollback JOB` points at the previous promoted tag; the tag left is skipped by later
    runs (until `o2 unreject`); `o2 rollback JOB TAG` goes to a named kept tag."""
    spec = _spec(cvmfs_tree, probe_script, tmp_path)
    jobs = tmp_path / "jobs.d"
    jobs.mkdir(mode=0o755)
    (jobs / "o2cv.yaml").write_text(yaml.safe_dump(manifest("o2cv", spec)))
    for tag in (A, B, C):
        cvmfs_tree.publish(tag)
        assert run_task(tmp_path, "o2cv", spec).result["promoted"] == tag

    out = _cli(tmp_path, "rollback", "o2cv")
    assert out.exit_code == 0, out.output
    assert f"now {B} (was {C})" in out.output
    assert _env_tag(tmp_path) == B
    assert os.readlink(tmp_path / "ptr" / "O2Physics-current") == str(cvmfs_tree.payload(B))
    view = json.loads(_cli(tmp_path, "tags", "o2cv", "--json").output)
    assert view["current"] == B
    assert C in view["rejected"]
    assert [p["tag"] for p in view["promoted"]] == [A, B, C]

    run = run_task(tmp_path, "o2cv", spec)
    assert run.returncode == 0
    assert run.result["promoted"] is None
    assert _env_tag(tmp_path) == B

    out = _cli(tmp_path, "rollback", "o2cv", A)
    assert out.exit_code == 0
    assert _env_tag(tmp_path) == A
    out = _cli(tmp_path, "rollback", "o2cv", D)
    assert out.exit_code == 1
    assert "not among the tags kept" in out.output

    cvmfs_tree.publish(D)
    assert run_task(tmp_path, "o2cv", spec).result["promoted"] == D
    out = _cli(tmp_path, "unreject", "o2cv", C)
    assert out.exit_code == 0
    assert C not in json.loads(_cli(tmp_path, "tags", "o2cv", "--json").output)["rejected"]


def test_rollback_refuses_while_a_run_holds_the_job(
    cvmfs_tree: CvmfsTree, probe_script: Path, tmp_path: Path
) -> None:
    """Rollback takes the job's lock: while a run holds it, rollback refuses and names it."""
    from orchestrator.tasks.o2sync.state import job_lock

    spec = _spec(cvmfs_tree, probe_script, tmp_path)
    jobs = tmp_path / "jobs.d"
    jobs.mkdir(mode=0o755)
    (jobs / "o2cv.yaml").write_text(yaml.safe_dump(manifest("o2cv", spec)))
    for tag in (A, B):
        cvmfs_tree.publish(tag)
        run_task(tmp_path, "o2cv", spec)
    with job_lock(tmp_path / "state" / "o2sync" / "o2cv", "o2cv"):
        out = _cli(tmp_path, "rollback", "o2cv")
    assert out.exit_code == 1
    assert "is in use by pid" in out.output
    assert _env_tag(tmp_path) == B


def test_a_pointer_that_has_not_moved_for_stale_after_raises_an_alert(
    cvmfs_tree: CvmfsTree, probe_script: Path, tmp_path: Path
) -> None:
    """The run succeeds (nothing is broken here) but its result carries an alert: the users'
    jobs have read the same build for longer than stale_after; a newer tag ends it."""
    cvmfs_tree.publish(A)
    spec = _spec(cvmfs_tree, probe_script, tmp_path, stale_after="7d")
    run = run_task(tmp_path, "o2cv", spec)
    assert run.returncode == 0
    assert "alert" not in run.result
    assert 0 <= run.result["pointer_age_s"] < 60
    (state_file,) = tmp_path.rglob("o2sync/o2cv/state.json")
    state = json.loads(state_file.read_text())
    state["promoted"][-1]["at"] = "2025-05-12T04:00:00+00:00"  # long ago
    state_file.write_text(json.dumps(state))
    run = run_task(tmp_path, "o2cv", spec)
    assert run.returncode == 0, run.stderr
    assert run.result["alert"] is True
    assert run.result["warning"].startswith(
        f"the pointer has named {A} since 2025-05-12T04:00:00+00:00 ("
    )
    assert "longer than stale_after (7d)" in run.result["warning"]
    assert run.result["summary"].startswith("STALE: up to date")
    quiet = run_task(tmp_path, "o2cv", _spec(cvmfs_tree, probe_script, tmp_path, stale_after=None))
    assert "alert" not in quiet.result
    assert quiet.result["pointer_age_s"] > 86400
    cvmfs_tree.publish(B)
    run = run_task(tmp_path, "o2cv", spec)
    assert run.result["promoted"] == B
    assert "alert" not in run.result
