"""Objects on the same images are one group: planned together, measured by one process (one
subtraction per image pair), each with its own result; the array has one task per group."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.tasks.photometry_batch.grouping import GROUP_MAX, group_tasks
from orchestrator.tasks.photometry_batch.plan import Task
from orchestrator.tasks.photometry_batch.spec import PhotometryBatchSpec
from tests.photometry_batch.batch_task import TASK_ARGV, task_env

ARCSEC = 1 / 3600


def _task(oid: str, ra: float, dec: float, images: str = "same") -> Task:
    return Task(
        key=f"{oid}_R062",
        oid=oid,
        ra=ra,
        dec=dec,
        band="R062",
        templates=Path("/nowhere/t.txt"),  # unreadable: the Roman pixel (0.11") is assumed
        science=Path("/nowhere/s.txt"),
        where="t.csv:2",
        fingerprint="f",
        images=images,
    )


def _spec(**builtin: object) -> PhotometryBatchSpec:
    return PhotometryBatchSpec.model_validate(
        {"objects": "/t.csv", "pipeline": {"builtin": {"cutout": 512, **builtin}}}
    )


def test_whole_frames_group_every_object_of_the_same_images() -> None:
    tasks = [_task("a", 10.0, -44.0), _task("b", 10.2, -44.1), _task("c", 10.0, -44.0, "other")]
    assert group_tasks(tasks, _spec(cutout=0)) == [[0, 1], [2]]


def test_with_cutouts_only_objects_within_half_a_cutout_share_one() -> None:
    """512 px cutouts of 0.11" pixels: 28" apart share a group, 40" apart do not."""
    tasks = [
        _task("a", 10.0, -44.0),
        _task("b", 10.0, -44.0 + 20 * ARCSEC),
        _task("c", 10.0, -44.0 + 48 * ARCSEC),  # 28" from b, 48" from a: not with both
        _task("d", 10.0, -44.0 + 68 * ARCSEC),
    ]
    assert group_tasks(tasks, _spec()) == [[0, 1], [2, 3]]


def test_no_groups_for_phrosty_or_when_turned_off() -> None:
    tasks = [_task("a", 10.0, -44.0), _task("b", 10.0, -44.0)]
    assert group_tasks(tasks, _spec(group=False)) == [[0], [1]]
    phrosty = PhotometryBatchSpec.model_validate(
        {
            "objects": "/t.csv",
            "pipeline": {
                "phrosty": {"container": {"runtime": "podman", "image": "x"}, "config": "/c"}
            },
        }
    )
    assert group_tasks(tasks, phrosty) == [[0], [1]]


def test_a_group_holds_at_most_group_max_objects() -> None:
    tasks = [_task(f"o{i}", 10.0, -44.0) for i in range(GROUP_MAX + 3)]
    groups = group_tasks(tasks, _spec(cutout=0))
    assert [len(g) for g in groups] == [GROUP_MAX, 3]


@pytest.mark.slow
def test_a_batch_measures_objects_on_the_same_images_in_one_process(tmp_path: Path) -> None:
    """Three supernovae on one set of images: the plan is one group (the array 0-0), one
    process measures all three (one log), each has its own light curve and result naming the
    other two (their accuracy: tests/dia/pipeline/test_group.py)."""
    data = tmp_path / "data"
    table = data / "objects.csv"
    subprocess.run(
        [
            *(sys.executable, "-m", "orchestrator.dia.cli", "simulate", "--out", str(data / "f")),
            *("--size", "256", "--epochs", "3", "--templates", "1", "--seed", "5"),
            *("--oid", "sa", "--companions", "2", "--table", str(table)),
        ],
        check=True,
        capture_output=True,
    )
    manifest = {
        "apiVersion": "orchestrator/v1",
        "kind": "PhotometryBatch",
        "name": "sne",
        "spec": {
            "objects": str(table),
            "output_dir": str(tmp_path / "out"),
            "scratch_dir": str(tmp_path / "scratch"),
            "pipeline": {"builtin": {"backend": "cpu", "cutout": 0}},
        },
    }
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    env = task_env(tmp_path / "m.json", tmp_path / "result.json", "g1")
    argv = TASK_ARGV
    planned = subprocess.run([*argv, "--plan"], env=env, capture_output=True, text=True)
    assert planned.stdout.strip().splitlines()[-1] == "0-0%2", planned.stdout
    done = subprocess.run(
        argv, env={**env, "ORCH_ARRAY_TASK_ID": "0"}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["counts"]["measured"] == 3
    rows = {r["oid"]: r for r in result["objects"]}
    assert rows["sa"]["measured_with"] == "sa-1,sa-2"
    assert rows["sa-2"]["measured_with"] == "sa,sa-1"
    run_dir = tmp_path / "out" / "sne" / "g1"
    assert [p.parent.name for p in run_dir.glob("tasks/*/task.log")] == ["sa_R062"]
    for oid in ("sa", "sa-1", "sa-2"):
        assert (run_dir / "tasks" / f"{oid}_R062" / "result.json").is_file()
        assert rows[oid]["epochs_measured"] == 3, rows[oid]
        assert Path(rows[oid]["lightcurve"]).name == f"{oid}_R062_lightcurve.csv"
