"""The checked-in JSON Schema: up to date with the models, referenced by every shipped manifest,
and in agreement with the loader about what a valid manifest is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.manifests import loader
from orchestrator.manifests.models import manifest_json_schema

REPO = Path(__file__).resolve().parents[2]
SCHEMA_FILE = REPO / "schemas" / "manifest.schema.json"
JOBS_DIR = REPO / "jobs.d"
SCHEMA_COMMENT = "# yaml-language-server: $schema="
SHIPPED = sorted(JOBS_DIR.glob("*.yaml")) + sorted(JOBS_DIR.glob("*.yml"))


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def manifest_yaml(text: str) -> Any:
    """Read YAML the way the loader does (YAML 1.2 booleans, so ``on: change`` stays text)."""
    return yaml.load(text, Loader=loader._ManifestYamlLoader)  # a SafeLoader subclass


def test_checked_in_schema_matches_the_models() -> None:
    """schemas/manifest.schema.json equals what the models generate (else: orchestrator schema)."""
    on_disk = json.loads(SCHEMA_FILE.read_text())
    assert on_disk == manifest_json_schema(), (
        f"{SCHEMA_FILE} is stale: run 'orchestrator schema' and commit the result"
    )


def test_schema_check_command_passes_on_the_repository() -> None:
    """`orchestrator schema --check` exits 0 in the repository (else: run orchestrator schema)."""
    result = run_cli("schema", "--check", "--out", str(SCHEMA_FILE.parent), cwd=REPO)
    assert result.returncode == 0, (
        f"{result.stdout}{result.stderr}\nrun 'orchestrator schema' to regenerate the schema"
    )


def test_schema_check_command_fails_on_a_stale_file(tmp_path: Path) -> None:
    """`orchestrator schema --check` exits 1 and says to run 'orchestrator schema' when stale."""
    stale = json.loads(SCHEMA_FILE.read_text())
    stale["title"] = "an older schema"
    (tmp_path / "manifest.schema.json").write_text(json.dumps(stale, indent=2))
    result = run_cli("schema", "--check", "--out", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert "orchestrator schema" in result.stdout + result.stderr


def test_schema_command_writes_what_check_accepts(tmp_path: Path) -> None:
    """`orchestrator schema` writes the models' schema, which `--check` then accepts."""
    assert run_cli("schema", "--out", str(tmp_path), cwd=tmp_path).returncode == 0
    written = tmp_path / "manifest.schema.json"
    assert json.loads(written.read_text()) == manifest_json_schema()
    assert run_cli("schema", "--check", "--out", str(tmp_path), cwd=tmp_path).returncode == 0


def test_schema_print_needs_no_checkout(tmp_path: Path) -> None:
    """`schema --print` writes the schema to stdout and no file (an installed package)."""
    shown = run_cli("schema", "--print", cwd=tmp_path)
    assert shown.returncode == 0
    assert json.loads(shown.stdout) == manifest_json_schema()
    assert list(tmp_path.iterdir()) == []


def test_there_are_shipped_manifests() -> None:
    """jobs.d ships at least one manifest (else the tests below check nothing)."""
    assert SHIPPED, f"no manifests in {JOBS_DIR}"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_manifest_points_editors_at_the_schema(path: Path) -> None:
    """Each shipped manifest's first line is a yaml-language-server $schema line naming the
    checked-in schema file by a path relative to the manifest."""
    first = path.read_text().splitlines()[0]
    assert first.startswith(SCHEMA_COMMENT), f"{path}: first line is {first!r}"
    target = (path.parent / first[len(SCHEMA_COMMENT) :].strip()).resolve()
    assert target.is_file(), f"{path}: $schema points at {target}, which does not exist"
    assert target == SCHEMA_FILE.resolve()


def validator() -> Any:
    """A validator for the checked-in schema; skips the calling test without jsonschema."""
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed")
    schema = json.loads(SCHEMA_FILE.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_manifest_validates_against_the_json_schema(path: Path) -> None:
    """Each shipped manifest is valid by the JSON Schema editors use, not only by the loader."""
    errors = list(validator().iter_errors(manifest_yaml(path.read_text())))
    assert not errors, [f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors]


BASE = "apiVersion: orchestrator/v1\nkind: Command\nname: sample\n"
VALID = {
    "cron": BASE + "schedule: {cron: '30 2 * * *', timezone: Europe/Zurich}\n"
    "spec: {command: [echo, hi]}\n",
    "every": BASE + "schedule: {every: 1h30m, jitter: 10s}\nspec: {command: [/bin/true]}\n",
    "on-change": BASE + "schedule:\n  on: change\nspec: {command: [/bin/true]}\n",
    "container": BASE + "spec:\n  command: [/bin/true]\n  container:\n    runtime: podman\n"
    "    image: alpine\n    mounts: [{source: /c, target: /d, readonly: true}]\n",
    "policy": BASE + "policy: {timeout: 90, retries: 3, retry_backoff: {base: 1m}}\n"
    "spec: {command: [/bin/true], env: {N: '4'}}\n",
}
# Short forms the loader accepts through BeforeValidators that the generated schema does not
# describe, so an editor flags a valid manifest (models.py needs WithJsonSchema for each).
SCHEMA_TOO_STRICT = {
    "mount-short-form": BASE + "spec:\n  command: [/bin/true]\n  container:\n"
    "    runtime: podman\n    image: alpine\n    mounts: ['/a:/b:ro']\n",
    "env-number": BASE + "spec: {command: [/bin/true], env: {OMP_NUM_THREADS: 4}}\n",
    "retry-backoff-scalar": BASE + "policy: {retry_backoff: 1m}\nspec: {command: [/bin/true]}\n",
}
INVALID = {
    "unknown-field": BASE + "spec: {command: [/bin/true], comand: [x]}\n",
    "string-command": BASE + "spec: {command: 'echo hi'}\n",
    "missing-spec": BASE,
    "bad-kind": "apiVersion: orchestrator/v1\nkind: Shell\nname: x\nspec: {command: [/bin/true]}\n",
    "bad-name": BASE.replace("sample", "Not_A_Label") + "spec: {command: [/bin/true]}\n",
    "bad-duration": BASE + "policy: {timeout: soon}\nspec: {command: [/bin/true]}\n",
    "two-schedules": BASE + "schedule: {every: 1m, on: change}\nspec: {command: [/bin/true]}\n",
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_schema_and_loader_accept_the_same_valid_manifests(name: str, tmp_path: Path) -> None:
    """A manifest the loader accepts is also valid by the JSON Schema."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(VALID[name])
    loader.load_manifest(path, check_perms=False)
    assert not list(validator().iter_errors(manifest_yaml(VALID[name])))


@pytest.mark.parametrize("name", sorted(SCHEMA_TOO_STRICT))
def test_schema_accepts_the_loaders_short_forms(name: str, tmp_path: Path) -> None:
    """Short forms the loader accepts (mount 'src:dst:ro', number env values, a scalar
    retry_backoff) are valid by the JSON Schema too."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(SCHEMA_TOO_STRICT[name])
    loader.load_manifest(path, check_perms=False)
    assert not list(validator().iter_errors(manifest_yaml(SCHEMA_TOO_STRICT[name])))


@pytest.mark.parametrize("name", sorted(INVALID))
def test_schema_and_loader_refuse_the_same_invalid_manifests(name: str, tmp_path: Path) -> None:
    """A manifest the loader refuses is also refused by the JSON Schema, so editors warn too."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(INVALID[name])
    with pytest.raises(loader.ManifestError):
        loader.load_manifest(path, check_perms=False)
    assert list(validator().iter_errors(manifest_yaml(INVALID[name])))
