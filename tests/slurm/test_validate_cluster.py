"""`orchestrator validate --cluster` against the real cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.slurm.conftest import SlurmCluster

MANIFEST = """\
apiVersion: orchestrator/v1
kind: Command
name: {name}
executor:
  slurm:
    partition: {partition}
    {qos}
spec: {{command: ["true"]}}
"""


def _validate(
    cluster: SlurmCluster, tmp_path: Path, partition: str, qos: str = ""
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "job.yaml"
    path.write_text(MANIFEST.format(name="job", partition=partition, qos=qos))
    path.chmod(0o644)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "validate", "--cluster", str(path)],
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_unknown_partition_is_reported_at_its_line(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """A partition the cluster lacks is an error at the field's line and column, naming the
    partitions that exist; a known one passes."""
    bad = _validate(slurm_cluster, tmp_path, "nope")
    assert bad.returncode == 1
    assert (
        "job.yaml:6:16: executor.slurm.partition: the cluster has no partition 'nope'" in bad.stdout
    )
    assert "debug" in bad.stdout
    good = _validate(slurm_cluster, tmp_path, "debug")
    assert good.returncode == 0, good.stdout + good.stderr


def test_the_fallbacks_partition_is_checked_too(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """executor.slurm.fallback names its own partition: one the cluster lacks is reported at
    its own line and column."""
    bad = _validate(slurm_cluster, tmp_path, "gpu", "fallback: {after: 1h, partition: nope}")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert (
        "job.yaml:7:38: executor.slurm.fallback.partition: the cluster has no partition 'nope'"
        in bad.stdout
    ), bad.stdout
    good = _validate(slurm_cluster, tmp_path, "gpu", "fallback: {after: 1h, partition: batch}")
    assert good.returncode == 0, good.stdout + good.stderr


def test_unknown_qos_needs_accounting(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    """With accounting a QOS the cluster lacks is an error; without it the check is skipped
    with a note, never failed."""
    result = _validate(slurm_cluster, tmp_path, "debug", "qos: gold")
    if slurm_cluster.accounting:
        assert result.returncode == 1
        assert "no qos 'gold'" in result.stdout
    else:
        assert result.returncode == 0
        assert "cannot check QOS names" in result.stderr


def _fake_command(bin_dir: Path, name: str, body: str) -> None:
    """A stand-in for one Slurm client command, first on PATH: this file's tests need a
    client that fails in a given way, which the real cluster does not do on demand."""
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)


def _validate_with(
    tmp_path: Path, env: dict[str, str], qos: str = ""
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "job.yaml"
    path.write_text(MANIFEST.format(name="job", partition="debug", qos=qos))
    path.chmod(0o644)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "validate", "--cluster", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_missing_sinfo_fails_validate_cluster(tmp_path: Path) -> None:
    """Without sinfo on PATH, `validate --cluster` cannot check anything: it exits 1 and says
    so, instead of passing the manifest with a note."""
    empty = tmp_path / "bin"
    empty.mkdir()
    result = _validate_with(tmp_path, {**os.environ, "PATH": str(empty)})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cannot check partition names: sinfo: sinfo not found on PATH" in result.stderr
    assert "manifest(s) valid" not in result.stderr


def test_failing_sinfo_fails_validate_cluster(tmp_path: Path) -> None:
    """An sinfo that exits 1 (controller down) fails `validate --cluster` with its message."""
    bin_dir = tmp_path / "bin"
    _fake_command(
        bin_dir,
        "sinfo",
        'echo "sinfo: error: Unable to contact slurm controller (connect failure)" >&2; exit 1',
    )
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = _validate_with(tmp_path, env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cannot check partition names: sinfo: sinfo: error: Unable to contact" in result.stderr


def test_hung_sinfo_fails_validate_cluster(tmp_path: Path) -> None:
    """An sinfo that never answers is cut at ORCH_SLURM_CMD_TIMEOUT_S and fails
    `validate --cluster`."""
    bin_dir = tmp_path / "bin"
    _fake_command(bin_dir, "sinfo", "exec sleep 60")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "ORCH_SLURM_CMD_TIMEOUT_S": "1",
    }
    result = _validate_with(tmp_path, env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cannot check partition names: sinfo: no answer within 1 s" in result.stderr


def test_failing_sacctmgr_fails_only_when_asked(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """With a real sinfo and an sacctmgr that fails (slurmdbd unreachable), a manifest naming a
    QOS fails `validate --cluster`; one naming no QOS or account does not ask sacctmgr and
    passes."""
    bin_dir = tmp_path / "bin"
    _fake_command(
        bin_dir,
        "sacctmgr",
        'echo "sacctmgr: error: Problem talking to the database: Connection refused" >&2\nexit 1',
    )
    env = {**slurm_cluster.env(), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    with_qos = _validate_with(tmp_path, env, "qos: normal")
    assert with_qos.returncode == 1, with_qos.stdout + with_qos.stderr
    assert "cannot check QOS names: sacctmgr: sacctmgr: error: Problem talking" in with_qos.stderr
    without = _validate_with(tmp_path, env)
    assert without.returncode == 0, without.stdout + without.stderr
