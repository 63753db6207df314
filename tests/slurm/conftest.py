"""The real single-node Slurm cluster for tests marked `slurm` (see tests/slurm/README.md).

Every test under tests/slurm/ is marked `slurm`. The session-scoped `slurm_cluster` fixture uses
the cluster named by SLURM_CONF when that is set, and otherwise brings one up with
tests/slurm/cluster.sh (once per session) and takes it down at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "cluster.sh"
CANNOT_RUN_HERE = 4  # cluster.sh's exit status for "not root, or packages cannot be installed"
UP_TIMEOUT_S = 900  # includes apt-get on a fresh machine
SCRIPT_TIMEOUT_S = 120


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items, not only this directory's.
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.slurm)


@dataclass(frozen=True)
class SlurmCluster:
    """A running cluster: its slurm.conf, its directory, and whether `sacct` works on it."""

    conf: Path
    dir: Path
    accounting: bool

    def env(self) -> dict[str, str]:
        """os.environ plus SLURM_CONF, for subprocesses that run Slurm's commands."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a Slurm command (sbatch, squeue, sacct, ...) against this cluster; never raises on
        a non-zero exit, so that tests can assert on failures too."""
        return subprocess.run(
            list(argv), env=self.env(), capture_output=True, text=True, timeout=timeout_s
        )

    def stop_ctld(self) -> None:
        """SIGTERM slurmctld (by pid) and wait until it has exited; jobs keep running."""
        self._script("stop-ctld")

    def start_ctld(self) -> None:
        """Start slurmctld again (it recovers jobs from its state) and wait until it answers."""
        self._script("start-ctld")

    def suspend_ctld(self) -> None:
        """SIGSTOP slurmctld: a hung controller (clients time out after MessageTimeout)."""
        self._script("suspend-ctld")

    def resume_ctld(self) -> None:
        """SIGCONT slurmctld."""
        self._script("resume-ctld")

    def _script(self, action: str) -> None:
        if not (self.dir / "run").is_dir():
            pytest.fail(f"{action}: the cluster in {self.dir} was not started by {SCRIPT}")
        result = subprocess.run(
            ["bash", str(SCRIPT), action, str(self.dir)],
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_S,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"cluster.sh {action} failed ({result.returncode}):\n{result.stderr}"
            )


def _conf_has_accounting(conf: Path) -> bool:
    for line in conf.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip().lower() == "accountingstoragetype":
            return value.strip() == "accounting_storage/slurmdbd"
    return False


def _want_accounting() -> tuple[bool, bool]:
    """(accounting, explicit): ORCH_SLURM_ACCOUNTING=1|0, else 1 where MariaDB is installed or
    apt-get can install it."""
    value = os.environ.get("ORCH_SLURM_ACCOUNTING", "").strip()
    if value in ("0", "1"):
        return value == "1", True
    if value:
        pytest.fail(f"ORCH_SLURM_ACCOUNTING={value!r}: use 1 (with slurmdbd) or 0 (without)")
    installed = shutil.which("mariadbd") is not None and shutil.which("slurmdbd") is not None
    return installed or shutil.which("apt-get") is not None, False


def _up(cluster_dir: Path, accounting: bool) -> subprocess.CompletedProcess[str]:
    argv = ["bash", str(SCRIPT), "up", *(["--accounting"] if accounting else []), str(cluster_dir)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=UP_TIMEOUT_S)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A real single-node Slurm cluster for the session: SLURM_CONF's, or one started here."""
    existing = os.environ.get("SLURM_CONF")
    if existing:
        conf = Path(existing)
        if not conf.is_file():
            pytest.fail(f"SLURM_CONF={existing} is set but is not a file")
        yield SlurmCluster(conf=conf, dir=conf.parent, accounting=_conf_has_accounting(conf))
        return

    require(
        os.geteuid() == 0,
        "root, to start the test Slurm cluster (tests/slurm/cluster.sh); "
        "or set SLURM_CONF to a running cluster's slurm.conf",
    )
    require(
        shutil.which("slurmctld") is not None or shutil.which("apt-get") is not None,
        "Debian's slurmctld, slurmd, slurm-client and munge packages (and no apt-get here to "
        "install them); or set SLURM_CONF to a running cluster's slurm.conf",
    )
    accounting, explicit = _want_accounting()
    # munged wants every directory above its socket searchable by all; pytest's basetemp
    # (/tmp/pytest-of-root) is 0700, so the cluster gets its own directory under /tmp and only
    # its logs are copied into pytest's temporary directory at the end.
    cluster_dir = Path(tempfile.mkdtemp(prefix="orch-slurm-", dir="/tmp"))
    result = _up(cluster_dir, accounting)
    if result.returncode == CANNOT_RUN_HERE and accounting and not explicit:
        accounting = False  # MariaDB/slurmdbd could not be installed: a cluster without sacct
        result = _up(cluster_dir, accounting)
    if result.returncode == CANNOT_RUN_HERE:
        shutil.rmtree(cluster_dir, ignore_errors=True)
        packages = "slurmctld slurmd slurm-client munge" + (
            " slurmdbd mariadb-server" if accounting else ""
        )
        require(False, f"Debian packages {packages} (cluster.sh: {result.stderr.strip()[-800:]})")
    if result.returncode != 0:
        raise AssertionError(
            f"cluster.sh up {cluster_dir} failed ({result.returncode}):\n{result.stderr}"
        )
    try:
        yield SlurmCluster(conf=cluster_dir / "slurm.conf", dir=cluster_dir, accounting=accounting)
    finally:
        down = subprocess.run(
            ["bash", str(SCRIPT), "down", str(cluster_dir)],
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_S,
        )
        logs = tmp_path_factory.mktemp("slurm-logs")
        for log in [*cluster_dir.glob("log/*"), *cluster_dir.glob("*/*.log")]:
            shutil.copy2(log, logs / log.name)
        if down.returncode != 0:
            raise AssertionError(f"cluster.sh down {cluster_dir} failed:\n{down.stderr}")
        if os.environ.get("ORCH_SLURM_KEEP") != "1":
            shutil.rmtree(cluster_dir, ignore_errors=True)
