"""What Slurm runs used, from sacct, in their records and in `orchestrator usage`: a plain job
with a GPU (count-only GPUs on the test cluster) and an array, each burning CPU and holding
memory. Without accounting (the no-slurmdbd stage) runs end the same, with no usage."""

from __future__ import annotations

import json
import sys

from tests.conftest import DaemonHarness
from tests.slurm.conftest import SlurmCluster
from tests.slurm.test_executor import manifest, slurm_daemon, trigger, wait_end

__all__ = ["slurm_daemon"]  # the fixture, imported for pytest

# ~150 MiB held and ~1.2 s of CPU, then a pause so that the 1 s sampling sees the peak
BURN = (
    f"{sys.executable} -c \"import time; b = b'x' * (150 * 2**20); t = time.process_time()\n"
    'while time.process_time() - t < 1.2: pass\ntime.sleep(1.5)"'
)


def test_slurm_runs_record_cpu_memory_and_gpu_hours(
    slurm_daemon: DaemonHarness, slurm_cluster: SlurmCluster
) -> None:
    h = slurm_daemon
    h.write(
        "gpu.yaml",
        manifest("gpu", BURN, slurm={"partition": "debug", "ntasks": 1, "gpus_per_task": 1}),
    )
    h.write("arr.yaml", manifest("arr", BURN, slurm={"partition": "debug", "array": "0-1"}))
    h.start()
    runs = {name: trigger(h, name) for name in ("gpu", "arr")}
    ended = {name: wait_end(h, run_id, 120) for name, run_id in runs.items()}
    for run in ended.values():
        assert run["state"] == "succeeded", run
    if not slurm_cluster.accounting:
        assert all("usage" not in r["result"] for r in ended.values())
        return
    gpu = ended["gpu"]["result"]["usage"]
    assert gpu["alloc_gpus"] == 1, gpu
    assert gpu["alloc_cpus"] >= 1
    assert gpu["cpu_s"] >= 1.0, gpu  # what the process used (TotalCPU)
    assert 120 <= gpu["max_rss_mb"] < 1000, gpu  # its step's peak (MaxRSS)
    assert gpu["wall_s"] >= 2
    assert gpu["gpu_hours"] == round(gpu["wall_s"] / 3600, 4)
    assert gpu["nodes"]
    arr = ended["arr"]["result"]
    assert arr["usage"]["tasks"] == 2
    per_task = {t: r["usage"] for t, r in arr["tasks"].items()}
    assert sorted(per_task) == ["0", "1"]
    assert all(u["cpu_s"] >= 1.0 and u["max_rss_mb"] >= 120 for u in per_task.values())
    assert arr["usage"]["cpu_s"] == round(sum(u["cpu_s"] for u in per_task.values()), 4)
    assert arr["usage"]["gpu_hours"] == 0

    report = json.loads(h.cli("usage", "--since", "1d", "--json").stdout)
    lines = {line["job"]: line for line in report["lines"]}
    assert lines["gpu"]["gpu_hours"] > 0
    assert lines["arr"]["runs"] == 1
    assert lines["total"]["runs"] == 2
    shown = h.cli("history", "gpu").stdout
    assert "GPU-h on " in shown, shown
