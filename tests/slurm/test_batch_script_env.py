"""The batch script's own variables on the real cluster (issue 8): neither a manifest's env nor
the daemon's environment, which sbatch exports to every job, can make a job skip its command."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import DaemonHarness
from tests.slurm.test_executor import manifest, slurm_daemon, trigger, wait_end

__all__ = ["slurm_daemon"]  # the fixture, imported for pytest


def test_rc_in_manifest_env_and_daemon_env_cannot_skip_the_command(
    slurm_daemon: DaemonHarness, tmp_path: Path
) -> None:
    """A daemon started with rc=0 exported, running a manifest whose env sets rc=0, run_dir and
    task, still runs the command on Slurm and records its real exit code (3), with the exit
    marker in the run's own directory."""
    h = slurm_daemon
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ran = tmp_path / "command-ran"
    h.write(
        "hostile.yaml",
        manifest(
            "hostile",
            f"touch {ran}; exit 3",
            env={"rc": "0", "run_dir": str(elsewhere), "task": "7"},
        ),
    )
    h.start(extra_env={"rc": "0", "__orch_rc": "0"})
    run = wait_end(h, trigger(h, "hostile"), 60)
    assert ran.exists(), run
    assert (run["state"], run["exit_code"]) == ("failed", 3), run
    assert (Path(run["run_dir"]) / "exit.none").read_text().strip() == "3"
    assert not any(elsewhere.iterdir())
