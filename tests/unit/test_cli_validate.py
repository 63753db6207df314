"""`orchestrator validate` run as a real process: exit codes and one `path:line:col:` line per
problem."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
JOBS_DIR = REPO / "jobs.d"
PROBLEM_LINE = re.compile(r"^(?P<path>.+?):(?P<line>\d+):(?P<col>\d+): (?P<message>.+)$")

GOOD = """\
apiVersion: orchestrator/v1
kind: Command
name: good
schedule:
  every: 10m
spec:
  command: [echo, ok]
"""

# Two type errors deep in spec: mounts[1] is an int (line 11, column 9) and env.A is a list
# (line 13, column 8).
BAD = """\
apiVersion: orchestrator/v1
kind: Command
name: bad
spec:
  command: [echo, hi]
  container:
    runtime: podman
    image: alpine
    mounts:
      - /data:/data:ro
      - 5
  env:
    A: [1, 2]
"""


def validate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "validate", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o644)
    return path


def problems(stdout: str) -> list[tuple[str, int, int, str]]:
    """Parse stdout, asserting that every line is a `path:line:col: message` line."""
    out = []
    for line in stdout.splitlines():
        match = PROBLEM_LINE.match(line)
        assert match, f"not a path:line:col: line: {line!r}"
        out.append((match["path"], int(match["line"]), int(match["col"]), match["message"]))
    return out


def test_bundled_jobs_dir_is_valid(tmp_path: Path) -> None:
    """The manifests shipped in jobs.d validate: exit 0, no problem lines; the suspended
    examples' placeholders are warnings (CHANGE-ME, for the user to fill in)."""
    result = validate(str(JOBS_DIR), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    found = problems(result.stdout)
    assert found
    assert all(" placeholder " in message and "warning: " in message for *_, message in found)


WARNED = """\
apiVersion: orchestrator/v1
kind: Command
name: warned
expect: {success_within: 26h}
policy:
  retries: 0
  retry_backoff: 5m
spec:
  command: [fetch, --token, CHANGE-ME]
"""


def test_warnings_keep_exit_zero_unless_strict(tmp_path: Path) -> None:
    path = write(tmp_path / "warned.yaml", WARNED)
    result = validate(str(path), cwd=tmp_path)
    assert result.returncode == 0
    assert [line.split(": ", 1)[1] for line in result.stdout.splitlines()] == [
        "warning: expect: on a job with neither schedule nor 'after': it can only be overdue "
        "once a run started by hand has succeeded",
        "warning: policy.retry_backoff: given while policy.retries is 0: no retry ever waits "
        "(set retries, or drop it)",
        "warning: spec.command.2: placeholder 'CHANGE-ME' left in: replace it before enabling "
        "the job",
    ]
    assert result.stdout.splitlines()[2].startswith(f"{path}:9:29: ")
    assert validate(str(path), "--strict", cwd=tmp_path).returncode == 1


def test_a_mount_of_the_wrong_form_is_told_the_forms(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", BAD)
    found = problems(validate(str(bad), cwd=tmp_path).stdout)
    assert found[0][3] == (
        "spec.container.mounts.1: a mount is 'source:target' (or 'source:target:ro') or "
        "{source, target, readonly}, not int '5'"
    )


def test_deep_type_errors_are_reported_one_line_each_with_positions(tmp_path: Path) -> None:
    """A file with two type errors deep in spec gives exit 1 and exactly two lines, each at the
    bad value's line:col with the dotted field path."""
    bad = write(tmp_path / "bad.yaml", BAD)
    result = validate(str(bad), cwd=tmp_path)
    assert result.returncode == 1
    found = problems(result.stdout)
    assert [(p, line, col) for p, line, col, _ in found] == [
        (str(bad), 11, 9),
        (str(bad), 13, 8),
    ]
    assert found[0][3].startswith("spec.container.mounts.1: ")
    assert found[1][3].startswith("spec.env.A: ")
    # The positions point at the offending values themselves.
    lines = BAD.splitlines()
    assert lines[11 - 1][9 - 1 :] == "5"
    assert lines[13 - 1][8 - 1 :] == "[1, 2]"


def test_directory_with_one_good_and_one_bad_file(tmp_path: Path) -> None:
    """Validating a directory reports only the bad file's problems and exits 1."""
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    jobs.chmod(0o755)
    write(jobs / "a-good.yaml", GOOD)
    bad = write(jobs / "b-bad.yaml", BAD)
    result = validate(str(jobs), cwd=tmp_path)
    assert result.returncode == 1
    found = problems(result.stdout)
    assert len(found) == 2
    assert {p for p, *_ in found} == {str(bad)}


def test_good_directory_exits_zero(tmp_path: Path) -> None:
    """A directory of valid manifests exits 0 and prints no problem lines."""
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    jobs.chmod(0o755)
    write(jobs / "a-good.yaml", GOOD)
    result = validate(str(jobs), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_missing_path_is_a_problem_line(tmp_path: Path) -> None:
    """A path that does not exist is reported as path:1:1 and exits 1."""
    missing = tmp_path / "nope.yaml"
    result = validate(str(missing), cwd=tmp_path)
    assert result.returncode == 1
    assert problems(result.stdout) == [(str(missing), 1, 1, "no such file or directory")]


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    """Two files claiming one job name: the second is a problem line naming the first."""
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    jobs.chmod(0o755)
    first = write(jobs / "a.yaml", GOOD)
    second = write(jobs / "b.yaml", GOOD)
    result = validate(str(jobs), cwd=tmp_path)
    assert result.returncode == 1
    found = problems(result.stdout)
    assert len(found) == 1
    assert found[0][0] == str(second)
    assert str(first) in found[0][3]


def test_world_writable_manifest_is_refused(tmp_path: Path) -> None:
    """A world-writable manifest is a problem line that says how to fix it (chmod go-w)."""
    path = write(tmp_path / "good.yaml", GOOD)
    path.chmod(0o666)
    result = validate(str(path), cwd=tmp_path)
    assert result.returncode == 1
    found = problems(result.stdout)
    assert len(found) == 1
    assert "chmod go-w" in found[0][3]


@pytest.mark.parametrize(
    ("schedule", "says"),
    [
        ('"0 3 * * *"', 'write {cron: "0 3 * * *"}'),
        ('"@daily"', 'write {cron: "@daily"}'),
        ("6h", "write {every: 6h}"),
        ('{every: 6h, cron: "0 3 * * *"}', "not 'every' beside another"),
    ],
)
def test_schedule_messages_fit_the_form_written(tmp_path: Path, schedule: str, says: str) -> None:
    path = write(
        tmp_path / "x.yaml",
        f"apiVersion: orchestrator/v1\nkind: Command\nname: x\nschedule: {schedule}\n"
        "spec:\n  command: [echo]\n  env: [A=1]\n",
    )
    found = problems(validate(str(path), cwd=tmp_path).stdout)
    assert says in found[0][3], found
    assert found[-1][3] == (
        'spec.env: env is a mapping of NAME: value, not a list; write e.g. {A: "1", B: two}'
    )
