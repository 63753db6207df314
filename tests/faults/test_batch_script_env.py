"""A Slurm batch script's own variables cannot be shadowed (issue 8, point 8).

The script is run here with bash, as slurmd runs it (SLURM_JOB_ID set, the submitting daemon's
environment exported): no Slurm is needed to show what it does with hostile names. Before the
fix, a manifest's ``env: {rc: "0"}`` (or ``rc=0`` in the daemon's own environment) made the job
skip its command and report success, and ``run_dir``/``task`` moved the exit marker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.executors.slurm.options import SlurmOptions
from orchestrator.executors.slurm.render import BatchRequest, render_batch_script

# Exits 3 after leaving a file that proves it ran, whatever the environment says.
COMMAND = [
    sys.executable,
    "-c",
    "import pathlib, sys; pathlib.Path(sys.argv[1]).touch(); sys.exit(3)",
]


def _run_script(
    tmp_path: Path, manifest_env: dict[str, str], inherited: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """Render the script of a run whose command exits 3, run it with bash as slurmd would
    (``inherited`` added to the environment sbatch exports), and return the result, the run
    directory and the file the command touches."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ran = tmp_path / "command-ran"
    req = BatchRequest(
        run_id="20261122T010203Z-abcdef",
        job="hostile",
        attempt=1,
        argv=[*COMMAND, str(ran)],
        env={},
        workdir=None,
        run_dir=run_dir,
        options=SlurmOptions(),
    )
    script = run_dir / "job.sbatch"
    script.write_text(render_batch_script(req, manifest_env))
    env = {**os.environ, "SLURM_JOB_ID": "77", **inherited}
    env.pop("SLURM_ARRAY_TASK_ID", None)
    done = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    return done, run_dir, ran


def _assert_ran_and_reported(
    done: subprocess.CompletedProcess[str], run_dir: Path, ran: Path, elsewhere: Path
) -> None:
    assert ran.exists(), f"the command did not run:\n{done.stderr}"
    assert done.returncode == 3, done.stderr
    assert (run_dir / "started.none").read_text().strip() == "77"
    assert (run_dir / "exit.none").read_text().strip() == "3", done.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == ["exit.none", "job.sbatch", "started.none"]
    assert not elsewhere.exists() or not any(elsewhere.iterdir())


@pytest.mark.parametrize(
    "names",
    [
        {"rc": "0"},
        {"rc": "0", "run_dir": "{elsewhere}", "task": "7"},
        # The script's own (prefixed) names: harmless too, since the manifest's environment
        # exists only in the command's subshell.
        {"__orch_rc": "0", "__orch_run_dir": "{elsewhere}", "__orch_task": "7"},
    ],
    ids=["rc", "rc-run_dir-task", "reserved-prefix"],
)
def test_manifest_env_cannot_skip_the_command_or_move_the_markers(
    tmp_path: Path, names: dict[str, str]
) -> None:
    """A manifest env naming the script's variables (rc, run_dir, task, or their __orch_
    forms) neither skips the command nor moves the exit marker: the command runs and its real
    exit code (3) lands in exit.none in the run directory."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    manifest_env = {k: v.format(elsewhere=elsewhere) for k, v in names.items()}
    done, run_dir, ran = _run_script(tmp_path, manifest_env, {})
    _assert_ran_and_reported(done, run_dir, ran, elsewhere)


def test_inherited_environment_cannot_skip_the_command(tmp_path: Path) -> None:
    """A daemon started with rc=0 (or the script's prefixed names) exported, which sbatch
    passes on to every job, still has each job run its command and report its exit code."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    inherited = {
        "rc": "0",
        "run_dir": str(elsewhere),
        "task": "7",
        "__orch_rc": "0",
        "__orch_run_dir": str(elsewhere),
        "__orch_task": "7",
    }
    done, run_dir, ran = _run_script(tmp_path, {}, inherited)
    _assert_ran_and_reported(done, run_dir, ran, elsewhere)


def test_manifest_path_cannot_stop_the_exit_marker(tmp_path: Path) -> None:
    """A manifest env PATH without mv (the command named by absolute path) still gets the exit
    marker written: the script's own steps use the submitting environment's PATH."""
    elsewhere = tmp_path / "elsewhere"
    done, run_dir, ran = _run_script(tmp_path, {"PATH": str(tmp_path / "empty-bin")}, {})
    _assert_ran_and_reported(done, run_dir, ran, elsewhere)
