"""Manifest loading: valid forms and defaults, positioned errors, permissions, directory scans."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.errors import ManifestError, ManifestProblem, UnsafePermissionsError
from orchestrator.manifests import scan as scan_module
from orchestrator.manifests.loader import (
    check_permissions,
    load_manifest,
    scan_directory,
    validate_paths,
)
from orchestrator.manifests.models import (
    ChangeSchedule,
    CronSchedule,
    EverySchedule,
)
from orchestrator.tasks.command import CommandManifest

HEAD = "apiVersion: orchestrator/v1\nkind: Command\nname: sample\n"
SPEC = "spec:\n  command: [echo, hi]\n"


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    d = tmp_path / "jobs.d"
    d.mkdir()
    d.chmod(0o755)
    return d


def write(path: Path, text: str | bytes, mode: int = 0o644) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    path.chmod(mode)
    return path


def load(tmp_path: Path, text: str | bytes) -> CommandManifest:
    manifest = load_manifest(write(tmp_path / "m.yaml", text)).manifest
    assert isinstance(manifest, CommandManifest)
    return manifest


def problems_of(tmp_path: Path, text: str | bytes) -> list[ManifestProblem]:
    with pytest.raises(ManifestError) as info:
        load_manifest(write(tmp_path / "m.yaml", text))
    assert info.value.problems
    return info.value.problems


def one_problem(tmp_path: Path, text: str | bytes) -> ManifestProblem:
    found = problems_of(tmp_path, text)
    assert len(found) == 1, found
    return found[0]


def position_of(text: str, needle: str, occurrence: int = 1) -> tuple[int, int]:
    """1-based line and column of the n-th occurrence of ``needle`` in ``text``."""
    at = -1
    for _ in range(occurrence):
        at = text.index(needle, at + 1)
    line = text.count("\n", 0, at) + 1
    col = at - (text.rfind("\n", 0, at) + 1) + 1
    return line, col


# --------------------------------------------------------------------------- valid forms


def test_cron_schedule_with_timezone(tmp_path: Path) -> None:
    """A cron schedule keeps its expression and time zone."""
    m = load(tmp_path, HEAD + "schedule:\n  cron: '30 2 * * *'\n  timezone: Europe/Zurich\n" + SPEC)
    assert isinstance(m.schedule, CronSchedule)
    assert (m.schedule.cron, m.schedule.timezone) == ("30 2 * * *", "Europe/Zurich")


def test_cron_timezone_defaults_to_utc(tmp_path: Path) -> None:
    """A cron schedule without a time zone is read in UTC."""
    m = load(tmp_path, HEAD + "schedule:\n  cron: '0 * * * *'\n" + SPEC)
    assert isinstance(m.schedule, CronSchedule)
    assert m.schedule.timezone == "UTC"


def test_every_schedule(tmp_path: Path) -> None:
    """An every schedule's interval is held in seconds."""
    m = load(tmp_path, HEAD + "schedule:\n  every: 1h30m\n" + SPEC)
    assert isinstance(m.schedule, EverySchedule)
    assert m.schedule.every == 5400


def test_on_change_schedule_reads_on_as_text(tmp_path: Path) -> None:
    """`on: change` is a ChangeSchedule: YAML 1.1's `on` is not turned into the boolean True."""
    m = load(tmp_path, HEAD + "schedule:\n  on: change\n" + SPEC)
    assert isinstance(m.schedule, ChangeSchedule)
    assert m.schedule.on == "change"


def test_no_schedule_is_allowed(tmp_path: Path) -> None:
    """A manifest without a schedule (run by hand or by `after`) loads with schedule None."""
    assert load(tmp_path, HEAD + "after: [heartbeat]\n" + SPEC).schedule is None


def test_yaml_11_booleans_stay_strings(tmp_path: Path) -> None:
    """yes/no/on/off stay text wherever text is expected (description, env values)."""
    text = HEAD + "description: yes\nspec:\n  command: [echo, on]\n"
    text += "  env: {ENABLED: yes, DEBUG: no, A: on, B: off}\n"
    m = load(tmp_path, text)
    assert m.description == "yes"
    assert m.spec.command == ["echo", "on"]
    assert m.spec.env == {"ENABLED": "yes", "DEBUG": "no", "A": "on", "B": "off"}


def test_true_is_a_boolean(tmp_path: Path) -> None:
    """`suspend: true` is the boolean True (YAML 1.2 booleans are still booleans)."""
    assert load(tmp_path, HEAD + "suspend: true\n" + SPEC).suspend is True
    assert load(tmp_path, HEAD + "suspend: false\n" + SPEC).suspend is False


def test_defaults(tmp_path: Path) -> None:
    """Left out: policy timeout 24h, concurrency forbid, executor local, not suspended."""
    m = load(tmp_path, HEAD + SPEC)
    assert m.policy.timeout == 24 * 3600
    assert m.policy.concurrency == "forbid"
    assert m.executor == "local"
    assert m.suspend is False
    assert m.spec.env == {}
    assert m.spec.container is None


@pytest.mark.parametrize(
    ("value", "seconds"), [("90s", 90), ("1h30m", 5400), ("45", 45), ("2.5", 2.5), ("2d", 172800)]
)
def test_duration_forms(tmp_path: Path, value: str, seconds: float) -> None:
    """Durations accept '90s', '1h30m' and bare numbers (seconds)."""
    assert load(tmp_path, HEAD + f"policy:\n  timeout: {value}\n" + SPEC).policy.timeout == seconds


def test_container_block_with_mount_short_forms(tmp_path: Path) -> None:
    """`src:dst:ro`, `src:dst` and the long form all become Mount models."""
    text = (
        HEAD
        + SPEC
        + (
            "  container:\n    runtime: podman\n    image: alpine:3\n    mounts:\n"
            "      - /data:/in:ro\n      - /scratch:/out\n"
            "      - {source: /a, target: /b, readonly: true}\n"
        )
    )
    c = load(tmp_path, text).spec.container
    assert c is not None
    assert (c.runtime, c.image) == ("podman", "alpine:3")
    assert [(m.source, m.target, m.readonly) for m in c.mounts] == [
        ("/data", "/in", True),
        ("/scratch", "/out", False),
        ("/a", "/b", True),
    ]


def test_numbers_in_env_become_text(tmp_path: Path) -> None:
    """`OMP_NUM_THREADS: 4` is the string '4' in the environment."""
    m = load(tmp_path, HEAD + SPEC + "  env:\n    OMP_NUM_THREADS: 4\n")
    assert m.spec.env == {"OMP_NUM_THREADS": "4"}


def test_string_command_is_refused_with_argv_hint(tmp_path: Path) -> None:
    """A shell-string command is an error that suggests the ["bash", "-c", ...] argv form."""
    text = HEAD + "spec:\n  command: echo hi && date\n"
    p = one_problem(tmp_path, text)
    assert p.field == "spec.command"
    assert '["bash", "-c",' in p.message
    assert (p.line, p.col) == position_of(text, "echo hi")


def test_content_hash_follows_the_bytes(tmp_path: Path) -> None:
    """Two manifests differing only in a comment have different content hashes."""
    a = load_manifest(write(tmp_path / "a.yaml", HEAD + SPEC)).content_hash
    b = load_manifest(write(tmp_path / "b.yaml", "# c\n" + HEAD + SPEC)).content_hash
    assert a != b


# --------------------------------------------------------------------------- positions


def test_type_error_deep_in_spec_has_exact_position(tmp_path: Path) -> None:
    """mounts[1] being an int is reported at that value's line:col as spec.container.mounts.1."""
    text = (
        HEAD
        + SPEC
        + (
            "  container:\n    runtime: podman\n    image: alpine\n"
            "    mounts:\n      - /a:/b:ro\n      - 12345\n"
        )
    )
    p = one_problem(tmp_path, text)
    assert p.field == "spec.container.mounts.1"
    assert (p.line, p.col) == position_of(text, "12345")


def test_env_value_list_has_exact_position(tmp_path: Path) -> None:
    """An env value that is a list is reported at the list's line:col as spec.env.NAME."""
    text = HEAD + SPEC + "  env:\n    GOOD: x\n    BAD: [1, 2]\n"
    p = one_problem(tmp_path, text)
    assert p.field == "spec.env.BAD"
    assert (p.line, p.col) == position_of(text, "[1, 2]")


def test_every_problem_in_a_file_is_reported(tmp_path: Path) -> None:
    """Several bad values give one problem each, in file order."""
    text = HEAD + "policy:\n  retries: many\n" + SPEC + "  env:\n    BAD: [1]\n"
    found = problems_of(tmp_path, text)
    assert [(p.field, p.line, p.col) for p in found] == [
        ("policy.retries", *position_of(text, "many")),
        ("spec.env.BAD", *position_of(text, "[1]")),
    ]


def test_unknown_field_points_at_the_key_and_lists_valid_fields(tmp_path: Path) -> None:
    """A misspelt key is reported at the key itself, with the fields valid there."""
    text = HEAD + "spec:\n  command: [a]\n  workdri: /tmp\n"
    p = one_problem(tmp_path, text)
    assert p.field == "spec.workdri"
    assert (p.line, p.col) == position_of(text, "workdri")
    assert "unknown field 'workdri'" in p.message
    for name in ("command", "env", "workdir", "container"):
        assert name in p.message


def test_unknown_field_in_cron_schedule_lists_cron_fields(tmp_path: Path) -> None:
    """An unknown key next to `cron` lists the cron schedule's fields."""
    text = HEAD + "schedule:\n  cron: '* * * * *'\n  tz: UTC\n" + SPEC
    p = one_problem(tmp_path, text)
    assert (p.line, p.col) == position_of(text, "tz:")
    assert "timezone" in p.message
    assert "catchup" in p.message


def test_missing_required_field(tmp_path: Path) -> None:
    """A missing `spec` is named in the error, positioned at the document."""
    p = one_problem(tmp_path, HEAD)
    assert p.field == "spec"
    assert "'spec'" in p.message
    assert "missing" in p.message
    assert (p.line, p.col) == (1, 1)


def test_missing_kind_names_the_valid_kinds(tmp_path: Path) -> None:
    """A manifest without `kind` says kind is required and which kinds exist."""
    p = one_problem(tmp_path, "apiVersion: orchestrator/v1\nname: x\n" + SPEC)
    assert p.field == "kind"
    assert "missing" in p.message
    assert "Command" in p.message


def test_unknown_kind(tmp_path: Path) -> None:
    """An unknown kind is reported at its value with the list of valid kinds."""
    text = "apiVersion: orchestrator/v1\nkind: Shell\nname: x\n" + SPEC
    p = one_problem(tmp_path, text)
    assert (p.field, (p.line, p.col)) == ("kind", position_of(text, "Shell"))
    assert "Shell" in p.message
    assert "Command" in p.message


def test_cron_with_four_fields(tmp_path: Path) -> None:
    """A four-field cron is reported at its value and says five fields are needed."""
    text = HEAD + "schedule:\n  cron: '1 2 3 4'\n" + SPEC
    p = one_problem(tmp_path, text)
    assert p.field == "schedule.cron"
    assert (p.line, p.col) == position_of(text, "'1 2 3 4'")
    assert "five" in p.message


def test_unknown_time_zone(tmp_path: Path) -> None:
    """An unknown time zone is reported at its value, with an example of a valid name."""
    text = HEAD + "schedule:\n  cron: '0 3 * * *'\n  timezone: Europe/Atlantis\n" + SPEC
    p = one_problem(tmp_path, text)
    assert p.field == "schedule.timezone"
    assert (p.line, p.col) == position_of(text, "Europe/Atlantis")
    assert "Europe/Zurich" in p.message


def test_two_documents_in_one_file(tmp_path: Path) -> None:
    """A second YAML document is an error at the second `---` telling to split the file."""
    text = HEAD + SPEC + "---\n" + HEAD + SPEC
    p = one_problem(tmp_path, text)
    assert (p.line, p.col) == position_of(text, "---")
    assert "one YAML document per file" in p.message


def test_yaml_syntax_error_line(tmp_path: Path) -> None:
    """An unclosed flow sequence is reported on the line where the parser gave up."""
    text = HEAD + "spec:\n  command: [echo, hi\n  env: {}\n"
    p = one_problem(tmp_path, text)
    assert p.message.startswith("YAML: ")
    assert p.line == position_of(text, "env:")[0]


def test_non_utf8_bytes(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are reported on the line that holds them."""
    data = (HEAD + "description: caf").encode() + b"\xe9\n" + SPEC.encode()
    p = one_problem(tmp_path, data)
    assert "UTF-8" in p.message
    assert p.line == 4


def test_control_character(tmp_path: Path) -> None:
    """A control character is a YAML problem at its position, not a crash."""
    text = HEAD + "description: a\x07b\n" + SPEC
    p = one_problem(tmp_path, text)
    assert p.message.startswith("YAML: ")
    assert (p.line, p.col) == position_of(text, "\x07")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    """An empty manifest is one problem at 1:1 saying what a manifest must contain."""
    p = one_problem(tmp_path, text)
    assert (p.line, p.col) == (1, 1)
    assert "empty" in p.message
    assert "apiVersion" in p.message


def test_top_level_list(tmp_path: Path) -> None:
    """A top-level list is refused with what is expected instead."""
    p = one_problem(tmp_path, "# jobs\n- " + HEAD.replace("\n", "\n  ") + "\n")
    assert "expected a mapping" in p.message
    assert (p.line, p.col) == (2, 1)


def test_problem_renders_as_path_line_col(tmp_path: Path) -> None:
    """str(problem) is `path:line:col: field: message`, the form editors and CI understand."""
    p = one_problem(tmp_path, HEAD + "spec:\n  command: [a]\n  bogus: 1\n")
    assert str(p) == f"{tmp_path / 'm.yaml'}:6:3: spec.bogus: {p.message}"


# --------------------------------------------------------------------------- permissions


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_group_or_world_writable_manifest_is_refused(tmp_path: Path, mode: int) -> None:
    """A manifest other users can write is refused with a 'chmod go-w' hint."""
    path = write(tmp_path / "m.yaml", HEAD + SPEC, mode=mode)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert "chmod go-w" in str(info.value)
    assert load_manifest(path, check_perms=False).name == "sample"


def test_world_writable_directory_is_refused(tmp_path: Path) -> None:
    """A world-writable jobs directory is refused, by check_permissions and by validate."""
    d = tmp_path / "open"
    d.mkdir()
    d.chmod(0o777)
    with pytest.raises(UnsafePermissionsError, match="chmod go-w"):
        check_permissions(d)
    _, found = validate_paths([d])
    assert any("chmod go-w" in p.message and p.path == d for p in found)


def test_private_file_and_directory_pass(jobs: Path) -> None:
    """0644 files in a 0755 directory pass the permission check."""
    check_permissions(jobs)
    check_permissions(write(jobs / "a.yaml", HEAD + SPEC))


# --------------------------------------------------------------------------- directories


EDITOR_LEFTOVERS = [".foo.yaml.swp", "foo.yaml~", "4913", "#foo.yaml#", ".#foo.yaml", "foo.tmp"]


def test_scan_ignores_editor_temp_files(jobs: Path) -> None:
    """Swap, backup, lock and probe files of editors are not read as manifests."""
    write(jobs / "real.yaml", HEAD.replace("sample", "real") + SPEC)
    for name in EDITOR_LEFTOVERS:
        write(jobs / name, "this: is [not valid")
    scan = scan_directory(jobs)
    assert set(scan.valid) == {"real"}
    assert scan.invalid == {}


def test_scan_reads_yml_and_skips_other_suffixes(jobs: Path) -> None:
    """`.yml` files are manifests too; README.md and .json are not."""
    write(jobs / "a.yml", HEAD.replace("sample", "a") + SPEC)
    write(jobs / "README.md", "# not a manifest")
    write(jobs / "x.json", "{}")
    assert set(scan_directory(jobs).valid) == {"a"}


def test_duplicate_names_first_file_by_name_wins(jobs: Path) -> None:
    """Two files with one job name: the first by file name keeps it, the second's error names it."""
    first = write(jobs / "10-first.yaml", HEAD + "description: first\n" + SPEC)
    second = write(jobs / "20-second.yaml", HEAD + "description: second\n" + SPEC)
    scan = scan_directory(jobs)
    assert scan.valid["sample"].path == first
    assert scan.valid["sample"].manifest.description == "first"
    assert set(scan.invalid) == {second}
    assert str(first) in str(scan.invalid[second])


def test_scan_reports_invalid_files_without_losing_valid_ones(jobs: Path) -> None:
    """One bad file is reported by path while the good ones load."""
    write(jobs / "a.yaml", HEAD.replace("sample", "a") + SPEC)
    bad = write(jobs / "b.yaml", HEAD.replace("sample", "b") + "spec: {command: x}\n")
    scan = scan_directory(jobs)
    assert set(scan.valid) == {"a"}
    assert set(scan.invalid) == {bad}


def test_scan_cache_sees_a_rewrite_with_same_size_and_mtime(jobs: Path) -> None:
    """A file rewritten with the same size and its old mtime restored is re-read, not served
    from the stat cache."""
    path = write(jobs / "a.yaml", HEAD.replace("sample", "aaa") + SPEC)
    cache: dict[Path, tuple[tuple[int, ...], object]] = {}
    assert set(scan_directory(jobs, cache=cache).valid) == {"aaa"}  # type: ignore[arg-type]
    before = path.stat()
    path.write_text(HEAD.replace("sample", "bbb") + SPEC)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert set(scan_directory(jobs, cache=cache).valid) == {"bbb"}  # type: ignore[arg-type]


def test_scan_cache_sees_a_quick_rewrite(jobs: Path) -> None:
    """A file rewritten immediately (same second, same size) is re-read on the next scan."""
    path = write(jobs / "a.yaml", HEAD.replace("sample", "aaa") + SPEC)
    cache: dict[Path, tuple[tuple[int, ...], object]] = {}
    for name in ("bbb", "ccc", "ddd"):
        scan_directory(jobs, cache=cache)  # type: ignore[arg-type]
        path.write_text(HEAD.replace("sample", name) + SPEC)
        assert set(scan_directory(jobs, cache=cache).valid) == {name}  # type: ignore[arg-type]


def test_scan_cache_serves_unchanged_old_files(jobs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unchanged file that is not racily new comes from the cache instead of being re-parsed."""
    write(jobs / "a.yaml", HEAD + SPEC)
    monkeypatch.setattr(scan_module, "_RACY_WINDOW_NS", 0)
    cache: dict[Path, tuple[tuple[int, ...], object]] = {}
    first = scan_directory(jobs, cache=cache)  # type: ignore[arg-type]
    calls: list[Path] = []
    real = scan_module.load_manifest_bytes
    monkeypatch.setattr(
        scan_module, "load_manifest_bytes", lambda p, data: calls.append(p) or real(p, data)
    )
    second = scan_directory(jobs, cache=cache)  # type: ignore[arg-type]
    assert calls == []
    assert second.valid["sample"] is first.valid["sample"]


def test_scan_cache_does_not_hide_a_permission_change(jobs: Path) -> None:
    """A cached file made group-writable afterwards is refused on the next scan."""
    path = write(jobs / "a.yaml", HEAD + SPEC)
    cache: dict[Path, tuple[tuple[int, ...], object]] = {}
    assert "sample" in scan_directory(jobs, cache=cache).valid  # type: ignore[arg-type]
    path.chmod(0o664)
    scan = scan_directory(jobs, cache=cache)  # type: ignore[arg-type]
    assert scan.valid == {}
    assert "chmod go-w" in str(scan.invalid[path])


def test_scan_cache_forgets_removed_files(jobs: Path) -> None:
    """A removed file leaves the scan and the cache."""
    path = write(jobs / "a.yaml", HEAD + SPEC)
    cache: dict[Path, tuple[tuple[int, ...], object]] = {}
    scan_directory(jobs, cache=cache)  # type: ignore[arg-type]
    path.unlink()
    assert scan_directory(jobs, cache=cache).valid == {}  # type: ignore[arg-type]
    assert path not in cache
