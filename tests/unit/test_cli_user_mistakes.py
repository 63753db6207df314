"""Command-line user mistakes give one clear line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import main

SLURM_JOB = (
    "apiVersion: orchestrator/v1\nkind: Command\nname: on-slurm\n"
    "executor: {slurm: {partition: debug}}\nspec:\n  command: [echo, hi]\n"
)


def run(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, args, env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result.exit_code, result.output


def test_bad_orch_number_in_environment_is_a_clear_error(tmp_path: Path) -> None:
    """ORCH_DEBOUNCE_S=abc names the variable and what is valid, with exit 1 (no traceback)."""
    code, out = run(
        ["plan", "--jobs-dir", str(tmp_path), "--state-dir", str(tmp_path)],
        env={"ORCH_DEBOUNCE_S": "abc"},
    )
    assert code == 1
    assert "ORCH_DEBOUNCE_S" in out
    assert "abc" in out


def test_plan_on_a_missing_jobs_directory_fails(tmp_path: Path) -> None:
    """`plan` on a jobs directory that does not exist says so and exits 1, not an empty plan."""
    missing = tmp_path / "nope"
    code, out = run(["plan", "--jobs-dir", str(missing), "--state-dir", str(tmp_path)])
    assert code == 1
    assert str(missing) in out
    assert "does not exist" in out


def test_schema_into_an_unwritable_place_is_a_clear_error(tmp_path: Path) -> None:
    """`schema --out` where the file cannot be written: one line naming the path, exit 1."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, out = run(["schema", "--out", str(blocker / "sub")])
    assert code == 1
    assert str(blocker / "sub") in out


def test_offline_status_shows_the_slurm_executor(tmp_path: Path) -> None:
    """`status --json` reports a job's executor as written, 'slurm' for a Slurm job."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    jobs.chmod(0o755)
    (jobs / "s.yaml").write_text(SLURM_JOB)
    (jobs / "s.yaml").chmod(0o644)
    code, out = run(
        ["status", "--json", "--jobs-dir", str(jobs), "--state-dir", str(tmp_path / "st")]
    )
    assert code == 2  # no daemon runs: status still reports the files, and says so by its code
    import json

    (row,) = json.loads(out)["jobs"]
    assert row["executor"] == "slurm"


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_orch_numbers_must_be_finite_and_not_negative(tmp_path: Path, value: str) -> None:
    """A negative or non-finite ORCH_RESCAN_INTERVAL_S is refused with a clear message."""
    code, out = run(
        ["plan", "--jobs-dir", str(tmp_path), "--state-dir", str(tmp_path)],
        env={"ORCH_RESCAN_INTERVAL_S": value},
    )
    assert code == 1
    assert "ORCH_RESCAN_INTERVAL_S" in out
