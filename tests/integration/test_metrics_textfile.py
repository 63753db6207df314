"""ORCH_METRICS_TEXTFILE: the daemon keeps a node-exporter textfile of its metrics, which
prometheus_client's own parser reads."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import DaemonHarness, wait_for
from tests.manifests import job

pytestmark = pytest.mark.daemon


def _read(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }


def test_the_daemon_writes_its_metrics_for_node_exporter(
    daemon: DaemonHarness, tmp_path: Path
) -> None:
    textfile = tmp_path / "textfile" / "orchestrator.prom"
    daemon.write("good.yaml", job("good", '["true"]'))
    daemon.write("bad.yaml", job("bad", '["false"]'))
    daemon.start(extra_env={"ORCH_METRICS_TEXTFILE": str(textfile), "ORCH_HEARTBEAT_S": "0.5"})
    for name in ("good", "bad"):
        daemon.cli("trigger", name)
    wait_for(
        lambda: all(
            daemon.history(n) and daemon.history(n)[0]["finished_at"] for n in ("good", "bad")
        ),
        15,
    )
    key = ("orchestrator_job_last_run_succeeded", (("job", "bad"),))
    got = wait_for(lambda: textfile.exists() and key in (m := _read(textfile)) and m, 10)
    assert got[key] == 0
    assert got[("orchestrator_job_last_run_succeeded", (("job", "good"),))] == 1
    assert got[("orchestrator_runs", (("job", "bad"), ("state", "failed")))] == 1
    assert got[("orchestrator_health", ())] == 1
    assert got[("orchestrator_up", ())] == 1
    assert oct(textfile.stat().st_mode & 0o777) == "0o644"
