"""`orchestrator validate --cluster` against the real cluster."""

from __future__ import annotations

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


def test_unknown_qos_needs_accounting(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    """With accounting a QOS the cluster lacks is an error; without it the check is skipped
    with a note, never failed."""
    result = _validate(slurm_cluster, tmp_path, "debug", "qos: gold")
    if slurm_cluster.accounting:
        assert result.returncode == 1 and "no qos 'gold'" in result.stdout
    else:
        assert result.returncode == 0
        assert "cannot check QOS names" in result.stderr
