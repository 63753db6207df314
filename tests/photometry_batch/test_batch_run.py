"""A PhotometryBatch run end to end on simulated data (``python -m`` the task, as the daemon
starts it): one bad object fails alone, results per object and per batch, and a rerun measures
only what failed or changed."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.photometry_batch.batch_task import TASK_ARGV, task_env

pytestmark = pytest.mark.slow

OBJECTS = ("sn1", "sn2", "sn3")


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small simulated objects (192^2, 2 epochs, 1 template), made once."""
    data = tmp_path_factory.mktemp("batch-data")
    for seed, oid in enumerate(OBJECTS, start=1):
        subprocess.run(
            [
                *(sys.executable, "-m", "orchestrator.dia.cli", "simulate"),
                *("--out", str(data / oid), "--size", "192", "--epochs", "2"),
                *("--templates", "1", "--seed", str(seed), "--oid", oid),
            ],
            check=True,
            capture_output=True,
        )
    return data


def _workspace(simulated: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(simulated, data)
    rows = ["oid,ra,dec,band,templates,science"]
    for oid in (*OBJECTS, "sn4"):
        obj = json.loads((data / "sn1" / "object.json").read_text())
        rows.append(f"{oid},{obj['ra']},{obj['dec']},R062,{oid}/templates.txt,{oid}/science.txt")
    (data / "objects.csv").write_text("\n".join(rows) + "\n")
    # sn4: its list names an image that is not there
    shutil.copytree(data / "sn3", data / "sn4")
    (data / "sn4" / "images" / "science_01.fits").unlink()
    return data


def _write_manifest(tmp_path: Path, **spec: Any) -> None:
    manifest = {
        "apiVersion": "orchestrator/v1",
        "kind": "PhotometryBatch",
        "name": "sne",
        "spec": {
            "objects": str(tmp_path / "data" / "objects.csv"),
            "output_dir": str(tmp_path / "out"),
            "scratch_dir": str(tmp_path / "scratch"),
            "parallel": 2,
            "pipeline": {"builtin": {"backend": "cpu", "cutout": 0}},
            **spec,
        },
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))


def _start(
    tmp_path: Path,
    run_id: str,
    env: dict[str, str] | None = None,
    extra_argv: Sequence[str] = (),
) -> subprocess.Popen[str]:
    """The task as the daemon (or a batch system's array task) starts it."""
    manifest, result = tmp_path / "manifest.json", tmp_path / f"result-{run_id}.json"
    full = task_env(manifest, result, run_id, **(env or {}))
    return subprocess.Popen(
        [*TASK_ARGV, *extra_argv],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _run(
    tmp_path: Path, run_id: str, extra_argv: Sequence[str] = (), **spec: Any
) -> tuple[int, dict[str, Any], str]:
    _write_manifest(tmp_path, **spec)
    proc = _start(tmp_path, run_id, extra_argv=extra_argv)
    out = proc.communicate(timeout=600)[0]
    result_file = tmp_path / f"result-{run_id}.json"
    result = json.loads(result_file.read_text()) if result_file.exists() else {}
    return proc.returncode, result, out


def _states(result: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {t["oid"]: (t["state"], t["measured_in_run"]) for t in result["objects"]}


def test_one_bad_object_fails_alone_and_the_batch_is_collected(
    simulated: Path, tmp_path: Path
) -> None:
    """sn2's template is corrupt (every epoch fails: its task fails), sn4 misses an image (not
    run, named with the table's line); sn1 and sn3 are measured, and the batch writes its
    summary (CSV, Parquet), the grid of light curves and its progress, and exits 1."""
    data = _workspace(simulated, tmp_path)
    (data / "sn2" / "images" / "template_00.fits").write_bytes(b"SIMPLE  = garbage")
    code, result, log = _run(tmp_path, "r1")
    assert code == 1, log
    assert result["counts"] == {"measured": 2, "skipped": 0, "failed": 1, "invalid": 1}
    tasks = {t["oid"]: t for t in result["objects"]}
    assert tasks["sn1"]["epochs_measured"] == 2
    assert tasks["sn1"]["backend"] == "cpu"
    assert tasks["sn1"]["peak_mb"] > 50
    assert tasks["sn2"]["state"] == "failed"
    assert "no epoch measured" in tasks["sn2"]["error"]
    assert tasks["sn4"]["error"].startswith(f"{data / 'objects.csv'}:5: band R062: missing image")
    run_dir = tmp_path / "out" / "sne" / "r1"
    assert result["output_dir"] == str(run_dir)
    with (run_dir / "summary.csv").open() as fh:
        summary = {r["oid"]: r for r in csv.DictReader(fh)}
    assert {k: v["state"] for k, v in summary.items()} == {
        "sn1": "measured",
        "sn2": "failed",
        "sn3": "measured",
        "sn4": "invalid",
    }
    assert (run_dir / "lightcurves.png").stat().st_size > 10_000
    assert (run_dir / "tasks" / "sn1_R062" / "sn1" / "sn1_R062_lightcurve.parquet").is_file()
    assert (run_dir / "tasks" / "sn2_R062" / "task.log").is_file()
    progress = json.loads((run_dir / "progress.json").read_text())
    assert (progress["done"], progress["total"]) == (4, 4)
    assert not any((tmp_path / "scratch").rglob("*.fits"))  # scratch removed per task
    if "parquet" in result["files"]:
        import pyarrow.parquet as pq

        assert pq.read_table(result["files"]["parquet"]).num_rows == 4


def test_a_rerun_measures_only_what_failed_or_changed(simulated: Path, tmp_path: Path) -> None:
    """After the corrupt template is replaced, a rerun measures sn2 alone (sn1 and sn3 are
    reused from the first run); touching one of sn1's images measures sn1 again; recompute
    measures everything."""
    data = _workspace(simulated, tmp_path)
    good = (data / "sn2" / "images" / "template_00.fits").read_bytes()
    (data / "sn2" / "images" / "template_00.fits").write_bytes(b"SIMPLE  = garbage")
    _run(tmp_path, "r1")
    (data / "sn2" / "images" / "template_00.fits").write_bytes(good)
    code, result, log = _run(tmp_path, "r2")
    assert code == 1, log  # sn4 is still missing an image
    states = _states(result)
    assert states["sn1"] == ("skipped", "r1")
    assert states["sn3"] == ("skipped", "r1")
    assert states["sn2"] == ("measured", "r2")
    image = data / "sn1" / "images" / "science_00.fits"
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    _, result, _ = _run(tmp_path, "r3")
    states = _states(result)
    assert states["sn1"] == ("measured", "r3")
    assert states["sn2"] == ("skipped", "r2")
    # recompute measures an unchanged object again (sn2 alone, inline, to keep this short)
    obj = json.loads((data / "sn2" / "object.json").read_text())
    inline = {"oid": "sn2", "ra": obj["ra"], "dec": obj["dec"], "band": "R062"}
    lists = {"templates": str(data / "sn2" / "templates.txt")}
    lists["science"] = str(data / "sn2" / "science.txt")
    _, result, _ = _run(tmp_path, "r4", objects=[{**inline, **lists}], recompute=True)
    assert _states(result) == {"sn2": ("measured", "r4")}


def test_array_tasks_in_any_order_collect_the_batch_once(simulated: Path, tmp_path: Path) -> None:
    """As a batch system runs it: `--plan` writes the plan and prints the array (sn4 left out:
    three tasks, two at a time); the three tasks, started together in another order, each
    measure their object, and exactly one (the last to finish) writes the batch's summary
    and the run's result. A task run again later (a retry) reuses its result and collects
    nothing twice."""
    _workspace(simulated, tmp_path)
    code, _, log = _run(tmp_path, "a1", extra_argv=["--plan"])
    assert code == 0, log
    assert log.strip().splitlines()[-1] == "0-2%2"
    run_dir = tmp_path / "out" / "sne" / "a1"
    assert (run_dir / "plan.json").is_file()
    procs = [_start(tmp_path, "a1", {"ORCH_ARRAY_TASK_ID": i}) for i in ("2", "0", "1")]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert sum("batch complete" in out for out in outputs) == 1
    result = json.loads((tmp_path / "result-a1.json").read_text())
    assert result["counts"] == {"measured": 3, "skipped": 0, "failed": 0, "invalid": 1}
    assert (run_dir / "summary.csv").is_file()
    again = _start(tmp_path, "a1", {"ORCH_ARRAY_TASK_ID": "0"})
    out = again.communicate(timeout=600)[0]
    assert again.returncode == 0, out
    assert "sn1 R062: skipped" in out
    assert "batch complete" not in out
    assert json.loads((tmp_path / "result-a1.json").read_text()) == result


def test_a_retry_of_the_failed_array_task_alone_completes_the_batch(
    simulated: Path, tmp_path: Path
) -> None:
    """A retry of an array's failed tasks is a new run without a plan step and with only those
    tasks: its one task plans, measures the object that failed, and completes the batch, the
    objects measured before counted as reused."""
    data = _workspace(simulated, tmp_path)
    template = data / "sn2" / "images" / "template_00.fits"
    good = template.read_bytes()
    template.write_bytes(b"SIMPLE  = garbage")
    _run(tmp_path, "b1", extra_argv=["--plan"])
    procs = [_start(tmp_path, "b1", {"ORCH_ARRAY_TASK_ID": i}) for i in ("0", "1", "2")]
    codes = [(p.communicate(timeout=600), p.returncode)[1] for p in procs]
    assert codes == [0, 1, 0]
    first = json.loads((tmp_path / "result-b1.json").read_text())
    assert first["counts"] == {"measured": 2, "skipped": 0, "failed": 1, "invalid": 1}
    template.write_bytes(good)
    retry = _start(tmp_path, "b2", {"ORCH_ARRAY_TASK_ID": "1"})
    out = retry.communicate(timeout=600)[0]
    assert retry.returncode == 0, out
    result = json.loads((tmp_path / "result-b2.json").read_text())
    assert result["counts"] == {"measured": 1, "skipped": 2, "failed": 0, "invalid": 1}
    assert _states(result)["sn2"] == ("measured", "b2")
    assert _states(result)["sn1"] == ("skipped", "b1")
