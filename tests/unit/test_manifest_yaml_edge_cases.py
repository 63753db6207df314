"""Manifest loading edge cases (duplicate keys, deep nesting, name clashes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.errors import ManifestError, ManifestProblem
from orchestrator.manifests.loader import load_manifest, scan_directory, validate_paths

HEAD = "apiVersion: orchestrator/v1\nkind: Command\nname: sample\n"
SPEC = "spec:\n  command: [echo, hi]\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o644)
    return path


def problems_of(tmp_path: Path, text: str) -> list[ManifestProblem]:
    with pytest.raises(ManifestError) as info:
        load_manifest(write(tmp_path / "m.yaml", text))
    return info.value.problems


def test_duplicate_top_level_key_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    """A key given twice in one mapping is an error at the second, naming the first's line."""
    (problem,) = problems_of(tmp_path, HEAD + "name: other\n" + SPEC)
    assert (problem.line, problem.col, problem.field) == (4, 1, "name")
    assert "line 3" in problem.message
    assert "duplicate" in problem.message


def test_duplicate_nested_key_is_an_error_with_its_field_path(tmp_path: Path) -> None:
    """Duplicate keys deep in the document are found too, with the field path of the key."""
    (problem,) = problems_of(tmp_path, HEAD + SPEC + "  env:\n    A: 1\n    A: 2\n")
    assert (problem.line, problem.col, problem.field) == (8, 5, "spec.env.A")
    assert "line 7" in problem.message


def test_merge_key_overrides_are_not_duplicates(tmp_path: Path) -> None:
    """`<<: *anchor` followed by an explicit key that overrides the merged one is allowed."""
    text = HEAD + "description: &d x\n" + SPEC + "  env:\n    <<: {A: '1', B: '2'}\n    A: '3'\n"
    loaded = load_manifest(write(tmp_path / "m.yaml", text))
    assert loaded.manifest.spec.env == {"A": "3", "B": "2"}  # type: ignore[union-attr]


def test_deeply_nested_yaml_is_an_error_not_a_crash(tmp_path: Path) -> None:
    """A manifest nested absurdly deep is refused with a positioned error; it must not crash
    the process (the C composer recurses on the C stack and segfaults near 50,000 levels)."""
    depth = 60_000
    text = HEAD + SPEC + "  workdir: " + "{a: " * depth + "1" + "}" * depth + "\n"
    path = write(tmp_path / "deep.yaml", text)
    code = (
        "import sys; from pathlib import Path\n"
        "from orchestrator.errors import ManifestError\n"
        "from orchestrator.manifests.loader import load_manifest\n"
        "try:\n    load_manifest(Path(sys.argv[1]))\n"
        "except ManifestError as exc:\n    print(exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{path}:6:" in proc.stdout
    assert "nested" in proc.stdout


def test_name_clash_points_at_the_name_line(tmp_path: Path) -> None:
    """Two files with one job name: the error is positioned at the later file's `name:` value."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    jobs.chmod(0o755)
    text = "apiVersion: orchestrator/v1\nkind: Command\n\nname: same\n" + SPEC
    write(jobs / "a.yaml", text)
    second = write(jobs / "b.yaml", text)
    scan = scan_directory(jobs)
    (problem,) = scan.invalid[second].problems
    assert (problem.line, problem.col) == (4, 7)
    _, problems = validate_paths([jobs])
    assert [(p.line, p.col) for p in problems] == [(4, 7)]


def test_tab_indentation_says_so(tmp_path: Path) -> None:
    """A tab used for indentation is reported at its position with the hint that YAML
    indents with spaces."""
    path = tmp_path / "tab.yaml"
    path.write_text("apiVersion: orchestrator/v1\nkind: Command\nname: t\nspec:\n\tcommand: [x]\n")
    with pytest.raises(ManifestError) as err:
        load_manifest(path, check_perms=False)
    problem = err.value.problems[0]
    assert (problem.line, problem.col) == (5, 1)
    assert "tab" in problem.message


def test_pattern_hints_follow_the_field_path_not_its_bare_name() -> None:
    """A hint is keyed by where the field is (a Slurm option, a container mount), so another
    kind's field of the same bare name is not told about mounts or sbatch."""
    from orchestrator.manifests.messages import _pattern_hint

    assert "mount path" in str(_pattern_hint(["spec", "container", "mounts", "0", "source"]))
    assert "'16G'" in str(_pattern_hint(["executor", "slurm", "mem"]))
    assert _pattern_hint(["spec", "checkout", "source"]) is None
    assert _pattern_hint(["spec", "mem"]) is None
