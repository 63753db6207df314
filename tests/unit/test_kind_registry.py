"""A new job kind is one package plus one line (orchestrator.kinds): a toy kind registered here
is validated (with the usual file:line:field errors), is in the JSON Schema, and runs."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import kinds
from orchestrator.errors import ManifestError
from orchestrator.manifests.document import load_manifest_bytes
from orchestrator.manifests.models import manifest_json_schema
from orchestrator.tasks.base import build_invocation
from tests.unit.toy_kind import ToyManifest

REPO = Path(__file__).resolve().parents[2]
TOY = """\
apiVersion: orchestrator/v1
kind: Toy
name: toy
spec:
  message: hello
  times: {times}
"""


@pytest.fixture
def toy() -> Iterator[None]:
    kinds.register(kinds.Kind("Toy", "tests.unit.toy_kind:ToyManifest", task="tests.unit.toy_kind"))
    try:
        yield
    finally:
        kinds.unregister("Toy")


def test_a_registered_kind_is_validated(toy: None, tmp_path: Path) -> None:
    loaded = load_manifest_bytes(tmp_path / "toy.yaml", TOY.format(times=2).encode())
    assert isinstance(loaded.manifest, ToyManifest)
    assert loaded.manifest.spec.times == 2
    with pytest.raises(ManifestError) as caught:
        load_manifest_bytes(tmp_path / "toy.yaml", TOY.format(times="many").encode())
    text = str(caught.value)
    assert "toy.yaml:6" in text
    assert "spec.times" in text


def test_a_registered_kind_is_in_the_schema(toy: None) -> None:
    schema = manifest_json_schema()
    assert "ToyManifest" in schema["$defs"]
    assert schema["discriminator"]["mapping"]["Toy"].endswith("ToyManifest")
    assert set(schema["$defs"]["ToyManifest"]["properties"]["spec"]) <= {"$ref"}


def test_a_registered_kind_runs(toy: None, tmp_path: Path) -> None:
    """The task runner starts its module as a Python task, which reads its manifest and
    writes its result where the daemon reads it."""
    loaded = load_manifest_bytes(tmp_path / "toy.yaml", TOY.format(times=3).encode())
    run_dir = tmp_path / "run"
    invocation = build_invocation(loaded.manifest, "r1", run_dir=run_dir)
    assert invocation.argv[1:] == ["-m", "tests.unit.toy_kind"]
    env = {**invocation.env, "PYTHONPATH": str(REPO)}
    done = subprocess.run(invocation.argv, env=env, cwd=run_dir, timeout=60, capture_output=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(Path(invocation.env["ORCH_TASK_RESULT"]).read_text())
    assert result == {"summary": "hello hello hello"}


def test_an_unregistered_kind_is_unknown_again(tmp_path: Path) -> None:
    kinds.register(kinds.Kind("Toy", "tests.unit.toy_kind:ToyManifest", task="tests.unit.toy_kind"))
    kinds.unregister("Toy")
    with pytest.raises(ManifestError, match="unknown kind 'Toy'; valid kinds: Command"):
        load_manifest_bytes(tmp_path / "toy.yaml", TOY.format(times=1).encode())


def test_a_kind_needs_one_way_to_run_and_its_own_literal() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        kinds.register(kinds.Kind("Bad", "tests.unit.toy_kind:ToyManifest"))
    kinds.register(kinds.Kind("Bad", "tests.unit.toy_kind:ToyManifest", task="x"))
    try:
        with pytest.raises(TypeError, match="Literal\\['Bad'\\]"):
            kinds.models()
    finally:
        kinds.unregister("Bad")
    assert "Bad" not in kinds.models()


def test_the_builtin_kinds_come_from_the_registry() -> None:
    assert kinds.names() == ("Command", "O2Sync", "AliEnToken", "PhotometryBatch")
    assert kinds.cli_groups() == {"o2": "orchestrator.tasks.o2sync.cli:o2"}
