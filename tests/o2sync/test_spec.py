"""The O2Sync spec: mode-specific fields, probe placeholders, and the shipped manifests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from orchestrator.tasks.o2sync.spec import O2SyncManifest
from tests.o2sync.conftest import manifest

REPO = Path(__file__).resolve().parents[2]
CVMFS: dict[str, Any] = {"mode": "cvmfs", "pointer": {"env_file": "~/o2.env"}}
SOURCE: dict[str, Any] = {"mode": "source", "workdir": "$SCRATCH/alice"}


def _validate(spec: dict[str, Any]) -> O2SyncManifest:
    return O2SyncManifest.model_validate(manifest("o2", spec))


def test_defaults_follow_the_alice_conventions() -> None:
    """Defaults: O2Physics on /cvmfs/alice.cern.ch/el9-x86_64 probed with alienv setenv; a
    source build with -j 8, --defaults o2, O2 and alidist fast-forwarded."""
    cvmfs = _validate(CVMFS).spec
    assert (cvmfs.package, cvmfs.cvmfs_root, cvmfs.arch) == (
        "O2Physics",
        "/cvmfs/alice.cern.ch",
        "el9-x86_64",
    )
    assert cvmfs.probe == [
        "{cvmfs_root}/bin/alienv",
        "setenv",
        "VO_ALICE@{package}::{tag}",
        "-c",
        "true",
    ]
    source = _validate(SOURCE).spec
    assert (source.jobs, source.defaults) == (8, "o2")
    assert [f.path for f in source.fast_forward] == ["O2", "alidist"]


def test_the_full_dump_round_trips() -> None:
    """What the daemon hands the task (a full JSON dump, every field present) validates again."""
    for spec in (CVMFS, SOURCE):
        doc = _validate(spec)
        assert O2SyncManifest.model_validate_json(doc.model_dump_json()) == doc


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"mode": "cvmfs"}, "mode cvmfs needs 'pointer'"),
        ({"mode": "source"}, "mode source needs 'workdir'"),
        ({**CVMFS, "jobs": 4}, "jobs: only for mode source"),
        ({**SOURCE, "keep": 3}, "keep: only for mode cvmfs"),
        ({"mode": "cvmfs", "pointer": {}}, "pointer needs 'symlink', 'env_file' or both"),
        ({**CVMFS, "probe": ["alienv", "q"]}, "use {tag}"),
        ({**CVMFS, "probe": ["x", "{tag}", "{version}"]}, "valid placeholders"),
        ({**CVMFS, "probe": "alienv setenv {tag}"}, "argv list"),
        ({**SOURCE, "jobs": 0}, "greater than or equal to 1"),
        ({**SOURCE, "typo": 1}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_specs_say_what_is_wrong(spec: dict[str, Any], message: str) -> None:
    """Each invalid spec is refused with a message that names the problem."""
    with pytest.raises(ValidationError) as info:
        _validate(spec)
    assert message in str(info.value)


def test_shipped_o2physics_manifests_validate_and_are_suspended() -> None:
    """jobs.d/o2physics-*.yaml: one per mode, suspended, Perlmutter settings, schema line
    first, and accepted by `orchestrator validate`."""
    from orchestrator.manifests.loader import load_manifest

    paths = sorted((REPO / "jobs.d").glob("o2physics-*.yaml"))
    modes = set()
    for path in paths:
        assert path.read_text().startswith(
            "# yaml-language-server: $schema=../schemas/manifest.schema.json\n"
        )
        m = load_manifest(path, check_perms=False).manifest
        assert isinstance(m, O2SyncManifest)
        assert m.suspend
        assert m.spec.container is not None
        assert m.spec.container.runtime == "shifter"
        assert m.spec.container.image == "tch285/o2alma:latest"
        modes.add(m.spec.mode)
        if m.spec.mode == "cvmfs":
            assert (m.spec.cvmfs_root, m.spec.arch) == ("/cvmfs/alice.cern.ch", "el9-x86_64")
    assert modes == {"cvmfs", "source"}
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "validate", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
