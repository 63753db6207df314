"""Manifests written to hurt, or merely wrong in ways that used to pass: durations past what a
datetime holds, files too big, alias bombs, NUL characters, names in after/requires that no job
has. Each is refused by the loader and by `validate` with a positioned message, and a daemon
that meets one in its jobs directory says so and goes on (issue 8, points 2, 5, 11, 13)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.errors import ManifestError, ManifestProblem
from orchestrator.manifests.limits import MAX_MANIFEST_BYTES, MAX_NODES
from orchestrator.manifests.loader import load_manifest, scan_directory, validate_paths
from tests.conftest import DaemonHarness, wait_for

HEAD = "apiVersion: orchestrator/v1\nkind: Command\nname: {name}\n"
SPEC = "spec:\n  command: [echo, hi]\n"


def invalid_rows(daemon: DaemonHarness, *names: str) -> dict[str, dict[str, object]]:
    """The status rows by file name once each of ``names`` is shown invalid (a new file's
    problems are reported once it has been left alone for the settle time)."""

    def rows() -> dict[str, dict[str, object]] | None:
        found = {Path(r["path"]).name: r for r in daemon.status()["jobs"]}
        return found if all(n in found and not found[n]["valid"] for n in names) else None

    result: dict[str, dict[str, object]] = wait_for(rows, 15, interval_s=0.2)
    return result


def manifest(name: str, extra: str = "", spec: str = SPEC) -> str:
    return HEAD.format(name=name) + extra + spec


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    path.chmod(0o644)
    return path


def jobs_dir(tmp_path: Path) -> Path:
    d = tmp_path / "jobs.d"
    d.mkdir()
    d.chmod(0o755)
    return d


def problems_of(path: Path) -> list[ManifestProblem]:
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    return info.value.problems


def validate_cli(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "validate", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def position(text: str, needle: str) -> tuple[int, int]:
    at = text.index(needle)
    return text.count("\n", 0, at) + 1, at - (text.rfind("\n", 0, at) + 1) + 1


# --------------------------------------------------------------------------- 2: durations


@pytest.mark.parametrize(
    "backoff",
    [
        "{base: 2000000000d}",
        "{base: 30s, max: 100000000000000000000000000000000000000000}",
        "{base: 1m, max: 400d}",
        "1.0e+300",
    ],
)
def test_retry_backoff_beyond_a_year_is_refused_at_its_value(tmp_path: Path, backoff: str) -> None:
    """A retry_backoff longer than 365 days (which made the daemon add more than a timedelta
    holds to a datetime, raising OverflowError) is a positioned error naming the bound."""
    text = manifest("r", f"policy:\n  retries: 3\n  retry_backoff: {backoff}\n")
    (problem,) = problems_of(write(tmp_path / "r.yaml", text))
    assert "longer than 365d" in problem.message
    assert problem.field.startswith("policy.retry_backoff")
    assert problem.line == 6


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("policy: {timeout: 1" + "0" * 400 + "}\n", "policy.timeout"),
        ("schedule: {every: 1000w}\n", "schedule.every"),
        ("schedule: {every: 1h, catchup: .inf}\n", "schedule.catchup"),
        ("policy: {kill_grace: .nan}\n", "policy.kill_grace"),
        ("policy: {timeout: -1}\n", "policy.timeout"),
    ],
)
def test_every_duration_field_is_bounded(tmp_path: Path, extra: str, field: str) -> None:
    """Every duration field refuses values over the bound, infinite, NaN or negative with a
    field error (a 400-digit integer used to escape as OverflowError, not a field error)."""
    (problem,) = problems_of(write(tmp_path / "d.yaml", manifest("d", extra)))
    assert problem.field == field
    assert problem.line == 4


def test_daemon_reports_an_overlong_backoff_and_keeps_running(daemon: DaemonHarness) -> None:
    """A failing job whose retry_backoff is beyond a datetime's range is refused by the
    daemon's scan (status shows it invalid, naming the bound); the daemon and the other jobs go
    on, and no OverflowError is ever logged."""
    daemon.write(
        "boom.yaml",
        manifest(
            "boom",
            "schedule: {on: change}\npolicy:\n  retries: 5\n"
            "  retry_backoff: {base: 2000000000d, max: 2000000000d}\n",
            "spec:\n  command: ['false']\n",
        ),
    )
    daemon.write("fine.yaml", manifest("fine", "schedule: {on: change}\n"))
    daemon.start()
    wait_for(lambda: [r for r in daemon.history("fine") if r["state"] == "succeeded"], 10)
    boom = invalid_rows(daemon, "boom.yaml")["boom.yaml"]
    assert "longer than 365d" in str(boom["error"])
    assert daemon.history("boom") == []
    assert "OverflowError" not in daemon.log_path.read_text()
    assert daemon.proc is not None
    assert daemon.proc.poll() is None


# --------------------------------------------------------------------------- 5: size, aliases

# A 'billion laughs': ten levels of ten aliases each, 10^9 strings once expanded; ~1 KB of YAML.
LAUGHS = (
    HEAD.format(name="lol")
    + "description: &l0 lol\n"
    + "".join(
        f"x{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]\n" if i else "" for i in range(1, 10)
    )
    + "spec:\n  command: *l9\n"
)


def flat_laughs(copies: int = 30_000, width: int = 45_000) -> str:
    """One long anchored string and a flat argv of aliases to it: about 150 KB of YAML, a
    1.3 GB argv once built (this one passed `validate` before the expansion limit)."""
    return (
        HEAD.format(name="flat")
        + f"description: &s {'x' * width}\n"
        + "spec:\n  command: ["
        + ", ".join(["*s"] * copies)
        + "]\n"
    )


MEASURE = """\
import resource, sys, time
from pathlib import Path
from orchestrator.errors import ManifestError
from orchestrator.manifests.loader import load_manifest
before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
try:
    load_manifest(Path(sys.argv[1]))
    print("LOADED")
except ManifestError as exc:
    print(exc)
print("elapsed_s", time.perf_counter() - t0)
print("grew_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_kb)
"""


@pytest.mark.parametrize("bomb", ["nested", "flat"])
def test_alias_bomb_is_refused_at_the_alias_quickly_and_small(tmp_path: Path, bomb: str) -> None:
    """An alias bomb (nested, or a flat argv of aliases to a long string) is refused at the
    line:col of the alias that takes it over the limit, in well under a second, and the
    process grows by less than 100 MB (nothing is expanded to find out)."""
    text = LAUGHS if bomb == "nested" else flat_laughs()
    path = write(tmp_path / f"{bomb}.yaml", text)
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    report = dict(line.split(" ", 1) for line in lines[-2:])
    assert "LOADED" not in proc.stdout
    assert float(report["elapsed_s"]) < 1.0
    assert int(report["grew_kb"]) < 100 * 1024
    problem = lines[0]
    assert "alias *" in problem
    assert "takes the document over" in problem
    _, line, col, _ = problem.split(":", 3)
    # The alias named in the message is at the position given.
    alias = problem.split("alias ", 1)[1].split(" ", 1)[0]
    assert text.splitlines()[int(line) - 1][int(col) - 1 :].startswith(alias)


def test_validate_refuses_a_billion_laughs_with_a_position(tmp_path: Path) -> None:
    """`validate` exits 1 on a billion-laughs manifest with one path:line:col line."""
    path = write(tmp_path / "lol.yaml", LAUGHS)
    result = validate_cli(str(path))
    assert result.returncode == 1
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"{path}:")
    assert f"{MAX_NODES:,} values" in line


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    """An alias inside the node it names (a recursive structure) is refused at the alias."""
    text = manifest("rec", "description: &d [a, *d]\n")
    (problem,) = problems_of(write(tmp_path / "rec.yaml", text))
    assert (problem.line, problem.col) == position(text, "*d")
    assert "recursive" in problem.message


def test_many_plain_values_are_refused_too(tmp_path: Path) -> None:
    """A manifest of more than MAX_NODES values without any alias is refused as well."""
    text = manifest("many", "description: [" + ",".join(["1"] * (MAX_NODES + 10)) + "]\n")
    (problem,) = problems_of(write(tmp_path / "many.yaml", text))
    assert f"{MAX_NODES:,} values" in problem.message
    assert problem.line == 4


def test_ordinary_anchors_and_merge_keys_still_load(tmp_path: Path) -> None:
    """Aliases within the limits (shared env blocks, merge keys) load as before."""
    text = (
        HEAD.format(name="anchors")
        + "description: &d shared\nspec:\n  command: [echo, *d, *d]\n"
        + "  env: {<<: {A: '1'}, B: *d}\n"
    )
    loaded = load_manifest(write(tmp_path / "anchors.yaml", text))
    assert loaded.manifest.spec.command == ["echo", "shared", "shared"]  # type: ignore[union-attr]


def test_a_manifest_over_the_size_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    """A 2 MiB manifest is refused at once, by its size, with a message naming the limit;
    `validate` exits 1 with that line."""
    path = write(tmp_path / "big.yaml", manifest("big") + "#" + "x" * (2 * 1024 * 1024) + "\n")
    t0 = time.perf_counter()
    (problem,) = problems_of(path)
    assert time.perf_counter() - t0 < 1.0
    assert (problem.line, problem.col) == (1, 1)
    assert f"at most {MAX_MANIFEST_BYTES:,} bytes" in problem.message
    assert "1 MiB" in problem.message
    result = validate_cli(str(path))
    assert result.returncode == 1
    assert "too large for a manifest" in result.stdout


def test_a_manifest_just_under_the_limit_loads(tmp_path: Path) -> None:
    """The size limit is a bound, not a cut: a manifest of MAX_MANIFEST_BYTES loads."""
    text = manifest("edge")
    text += "#" * (MAX_MANIFEST_BYTES - len(text) - 1) + "\n"
    assert len(text.encode()) == MAX_MANIFEST_BYTES
    assert load_manifest(write(tmp_path / "edge.yaml", text)).name == "edge"


def test_daemon_reports_bombs_and_giants_and_stays_responsive(daemon: DaemonHarness) -> None:
    """A daemon whose jobs directory holds a 2 MiB manifest and both alias bombs reports each
    as invalid naming its limit, loads the good job, and answers status promptly."""
    (daemon.jobs_dir / "big.yaml").write_text(manifest("big") + "#" + "x" * (2 << 20) + "\n")
    (daemon.jobs_dir / "lol.yaml").write_text(LAUGHS)
    (daemon.jobs_dir / "flat.yaml").write_text(flat_laughs())
    for name in ("big.yaml", "lol.yaml", "flat.yaml"):
        (daemon.jobs_dir / name).chmod(0o644)
    daemon.write("good.yaml", manifest("good"))
    daemon.start()
    rows = invalid_rows(daemon, "big.yaml", "lol.yaml", "flat.yaml")
    t0 = time.monotonic()
    daemon.status()
    assert time.monotonic() - t0 < 5
    assert rows["good.yaml"]["valid"] is True
    assert "too large for a manifest" in str(rows["big.yaml"]["error"])
    assert "takes the document over" in str(rows["lol.yaml"]["error"])
    assert "takes the document over" in str(rows["flat.yaml"]["error"])


# --------------------------------------------------------------------------- 11: NUL


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ('  command: [echo, "a\\0b"]\n', "spec.command.1"),
        ('  command: [echo]\n  env: {A: "x\\0y"}\n', "spec.env.A"),
        ('  command: [echo]\n  workdir: "/tmp\\0/x"\n', "spec.workdir"),
        (
            '  command: [echo]\n  container: {runtime: podman, image: alpine, env: {B: "\\0"}}\n',
            "spec.container.env.B",
        ),
        (
            "  command: [echo]\n"
            '  container: {runtime: podman, image: alpine, extra_args: ["--x=\\0"]}\n',
            "spec.container.extra_args.0",
        ),
    ],
)
def test_nul_characters_are_refused_at_their_value(tmp_path: Path, spec: str, field: str) -> None:
    """A NUL character (YAML's "\\0") in a command, an environment value, a workdir or a
    container's env or arguments is refused at its value with its field path (execve cannot
    pass it, so the run could never start)."""
    text = HEAD.format(name="nul") + "spec:\n" + spec
    (problem,) = problems_of(write(tmp_path / "nul.yaml", text))
    assert problem.field == field
    assert "NUL character" in problem.message
    assert (problem.line, problem.col) == position(text, '"' + text.split('"')[1])


def test_validate_reports_a_nul_with_its_position(tmp_path: Path) -> None:
    """`validate` exits 1 with the NUL's path:line:col."""
    path = write(tmp_path / "nul.yaml", manifest("nul", spec='spec:\n  command: [echo, "\\0"]\n'))
    result = validate_cli(str(path))
    assert result.returncode == 1
    assert result.stdout.startswith(f"{path}:5:19: spec.command.1: contains a NUL character")


# --------------------------------------------------------------------------- 13: after/requires

TOKEN = """\
apiVersion: orchestrator/v1
kind: AliEnToken
name: token
spec: {}
"""


def test_dangling_after_is_refused_at_its_entry_in_a_scan(tmp_path: Path) -> None:
    """`after: [no-such-job]` makes the manifest invalid in a directory scan, positioned at
    the name, with the known jobs listed; the other jobs load."""
    jobs = jobs_dir(tmp_path)
    write(jobs / "a.yaml", manifest("a"))
    text = manifest("b", "after: [a, no-such-job]\n")
    path = write(jobs / "b.yaml", text)
    scan = scan_directory(jobs)
    assert set(scan.valid) == {"a"}
    (problem,) = scan.invalid[path].problems
    assert (problem.line, problem.col) == position(text, "no-such-job")
    assert problem.field == "after.1"
    assert "no job named 'no-such-job'; known jobs: a" in problem.message


def test_requires_takes_any_job_but_not_itself(tmp_path: Path) -> None:
    """`requires` may name any job (a Command wrapping a site's own token tool writes the same
    `valid_until` result as AliEnToken); a job naming itself in `after` or `requires` is refused
    at the entry."""
    jobs = jobs_dir(tmp_path)
    write(jobs / "token.yaml", TOKEN)
    write(jobs / "plain.yaml", manifest("plain"))
    good = write(jobs / "good.yaml", manifest("good", "requires: [token]\n"))
    stand_in = write(jobs / "stand-in.yaml", manifest("stand-in", "requires: [plain]\n"))
    text = manifest("loop", "after: [plain, loop]\n")
    loop = write(jobs / "loop.yaml", text)
    scan = scan_directory(jobs)
    assert scan.valid["good"].path == good
    assert scan.valid["stand-in"].path == stand_in
    (problem,) = scan.invalid[loop].problems
    assert problem.field == "after.1"
    assert (problem.line, problem.col) == position(text, "loop]")
    assert "cannot name itself" in problem.message


def test_a_name_held_by_an_invalid_owner_is_not_dangling(tmp_path: Path) -> None:
    """While a job's file is invalid (its last valid version in effect in the daemon), the
    jobs that follow it stay valid: one typo does not cascade into its dependants."""
    jobs = jobs_dir(tmp_path)
    owner = write(jobs / "a.yaml", manifest("a", "bogus: 1\n"))
    write(jobs / "b.yaml", manifest("b", "after: [a]\n"))
    scan = scan_directory(jobs, owners={"a": owner})
    assert set(scan.valid) == {"b"}
    assert set(scan.invalid) == {owner}


def test_validate_a_file_looks_up_names_among_its_neighbours(tmp_path: Path) -> None:
    """`validate` of one file accepts an `after` name defined by another manifest of its
    directory, and reports a name defined nowhere at its line:col."""
    jobs = jobs_dir(tmp_path)
    write(jobs / "a.yaml", manifest("a"))
    ok = write(jobs / "b.yaml", manifest("b", "after: [a]\n"))
    text = manifest("c", "after: [nope]\n")
    bad = write(jobs / "c.yaml", text)
    assert validate_cli(str(ok)).returncode == 0
    result = validate_cli(str(bad))
    assert result.returncode == 1
    line, col = position(text, "nope")
    assert result.stdout.splitlines() == [
        f"{bad}:{line}:{col}: after.0: no job named 'nope'; known jobs: a, b, c"
    ]
    loaded, problems = validate_paths([jobs])
    assert {lm.name for lm in loaded} == {"a", "b"}
    assert [p.path for p in problems] == [bad]


def test_daemon_reports_a_dangling_after(daemon: DaemonHarness) -> None:
    """A new manifest with a dangling `after` name is shown invalid by the daemon's status with
    the message at its line; the other job is loaded."""
    daemon.write("a.yaml", manifest("a"))
    daemon.write("b.yaml", manifest("b", "after: [no-such-job]\n"))
    daemon.start()
    rows = invalid_rows(daemon, "b.yaml")
    assert rows["a.yaml"]["valid"] is True
    assert "b.yaml:4:9: after.0: no job named 'no-such-job'" in str(rows["b.yaml"]["error"])
