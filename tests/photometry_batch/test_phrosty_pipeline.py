"""A PhotometryBatch whose pipeline is phrosty: each task runs phrosty's command line in a real
podman container (runc), with its own lists, output and temporary folders mounted, and its
Parquet light curve is read back into the batch's layout. phrosty itself is replaced by a
stand-in with its command line and outputs (``phrosty_standin.py``: phrosty needs CUDA and the
PIT's image). On a stalled GPU queue's fallback (``ORCH_FALLBACK=1``) the builtin core measures
instead, on the CPU."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from orchestrator.tasks.photometry_batch.phrosty import phrosty_command
from orchestrator.tasks.photometry_batch.plan import Task
from orchestrator.tasks.photometry_batch.spec import PhrostyPipeline
from tests.conftest import require
from tests.photometry_batch.batch_task import TASK_ARGV, task_env
from tests.unit.test_containers import import_image

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
STANDIN = Path(__file__).resolve().parent / "phrosty_standin.py"
IMAGE = "localhost/orch-test-phrosty-standin:latest"


def test_the_container_command_is_phrostys_with_the_tasks_own_folders(tmp_path: Path) -> None:
    """The argv is the runtime's, phrosty's arguments in its documented order, SNPIT_CONFIG set,
    and the task's lists, outputs and scratch mounted where the pipeline's paths say."""
    lists = tmp_path / "lists"
    lists.mkdir()
    for name in ("t.txt", "s.txt"):
        (lists / name).write_text("path observation_id sca mjd band\n")
    task = Task(
        key="sn1_R062",
        oid="sn1",
        ra=7.5,
        dec=-44.8,
        band="R062",
        templates=lists / "t.txt",
        science=lists / "s.txt",
        where="x.csv:2",
        fingerprint="f",
    )
    ph = PhrostyPipeline.model_validate(
        {
            "container": {
                "runtime": "podman-hpc",
                "image": "registry.nersc.gov/m4385/roman-snpit-env:cuda",
                "mounts": ["/ou2024:/ou2024:ro"],
                "extra_args": ["--gpu"],
            },
            "config": "/home/phrosty/config.yaml",
            "nprocs": 15,
            "nwrite": 5,
            "args": ["-v"],
        }
    )
    folder, scratch = tmp_path / "task", tmp_path / "scratch"
    folder.mkdir()
    scratch.mkdir()
    argv, _ = phrosty_command(task, ph, folder, scratch, {})
    i = argv.index("registry.nersc.gov/m4385/roman-snpit-env:cuda")
    runtime, image_args = argv[:i], argv[i + 1 :]
    assert runtime[:3] == ["podman-hpc", "run", "--rm"]
    assert "-e" in runtime
    assert "SNPIT_CONFIG=/home/phrosty/config.yaml" in runtime
    volumes = [runtime[j + 1] for j, a in enumerate(runtime) if a == "-v"]
    assert volumes == [
        "/ou2024:/ou2024:ro",
        f"{folder}/inputs:/orch_task:ro",
        f"{folder}/lc:/lc_out_dir",
        f"{folder}/dia:/dia_out_dir",
        f"{scratch}:/phrosty_temp",
    ]
    assert runtime[-1] == "--gpu"
    assert image_args == [
        *("python", "phrosty/pipeline.py", "--oid", "sn1", "-oc", "ou2024", "-b", "R062"),
        *("-r", "7.5", "-d", "-44.8", "-ic", "ou2024"),
        *("-t", "/orch_task/templates.txt", "-s", "/orch_task/science.txt"),
        *("-p", "15", "-w", "5", "-v"),
    ]
    assert (folder / "inputs" / "templates.txt").read_text().startswith("path observation_id")


def _standin_image(tmp_path: Path) -> str:
    """An image of busybox and the host's library layout (lib -> usr/lib): with the host's /usr
    and Python mounted read-only it runs the test environment's interpreter."""
    busybox = shutil.which("busybox")
    require(busybox is not None, "busybox (Debian package busybox-static)")
    assert busybox is not None
    tarball = tmp_path / "rootfs.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for name, kind, target in (
            ("bin/sh", tarfile.SYMTYPE, "busybox"),
            ("lib", tarfile.SYMTYPE, "usr/lib"),
            ("lib64", tarfile.SYMTYPE, "usr/lib64"),
            ("usr", tarfile.DIRTYPE, ""),
            ("tmp", tarfile.DIRTYPE, ""),
        ):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            info.mode = 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
    return import_image(tarball, IMAGE)


def _simulate(data: Path, oids: tuple[str, ...]) -> Path:
    """Objects and phrosty-style lists: one image root, paths relative to it, the pointing
    column named observation_id."""
    rows = ["oid,ra,dec,band,templates,science"]
    for seed, oid in enumerate(oids, start=1):
        subprocess.run(
            [
                *(sys.executable, "-m", "orchestrator.dia.cli", "simulate"),
                *("--out", str(data / oid), "--size", "192", "--epochs", "2"),
                *("--templates", "1", "--seed", str(seed), "--oid", oid),
            ],
            check=True,
            capture_output=True,
        )
        obj = json.loads((data / oid / "object.json").read_text())
        for which in ("templates", "science"):
            lines = (data / oid / f"{which}.txt").read_text().splitlines()
            header = lines[0].replace("pointing", "observation_id")
            # image (and, for the stand-in's core, PSF) paths relative to the one root
            body = [
                " ".join(f"{oid}/{f}" if "/" in f else f for f in line.split())
                for line in lines[1:]
                if line.strip()
            ]
            (data / f"{oid}_{which}.txt").write_text("\n".join([header, *body]) + "\n")
        rows.append(f"{oid},{obj['ra']},{obj['dec']},R062,{oid}_templates.txt,{oid}_science.txt")
    (data / "objects.csv").write_text("\n".join(rows) + "\n")
    return data / "objects.csv"


def _manifest(tmp_path: Path, table: Path, image: str) -> dict[str, Any]:
    config = tmp_path / "config"
    config.mkdir()
    paths = {"lc_out_dir": "/lc_out_dir", "dia_out_dir": "/dia_out_dir", "temp_dir": "/tmp/t"}
    (config / "phrosty.yaml").write_text(json.dumps({"photometry": {"phrosty": {"paths": paths}}}))
    host_python = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()}
    mounts = [f"{p}:{p}:ro" for p in sorted(host_python) if not p.is_relative_to("/usr")]
    mounts += ["/usr:/usr:ro", f"{REPO}:{REPO}", f"{table.parent}:/sims_dir:ro"]
    mounts.append(f"{config}:/config:ro")
    return {
        "apiVersion": "orchestrator/v1",
        "kind": "PhotometryBatch",
        "name": "sne",
        "spec": {
            "objects": str(table),
            "output_dir": str(tmp_path / "out"),
            "scratch_dir": str(tmp_path / "scratch"),
            "parallel": 2,
            "pipeline": {
                "phrosty": {
                    "container": {
                        "runtime": "podman",
                        "image": image,
                        "mounts": mounts,
                        "env": {"SIMS_DIR": "/sims_dir", "HOME": "/tmp"},
                        "extra_args": [
                            *("--runtime", "runc", "--network=none"),
                            *("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"),
                        ],
                    },
                    "command": [sys.executable, str(STANDIN)],
                    "config": "/config/phrosty.yaml",
                    "images_root": str(table.parent),
                    "paths": {"temp": "/tmp/t"},
                }
            },
        },
    }


def _run(tmp_path: Path, manifest: dict[str, Any], run_id: str, **env: str) -> dict[str, Any]:
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    result_file = tmp_path / f"result-{run_id}.json"
    done = subprocess.run(
        TASK_ARGV,
        env=task_env(tmp_path / "manifest.json", result_file, run_id, **env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result_file.exists(), done.stdout + done.stderr
    return {"code": done.returncode, "log": done.stdout, **json.loads(result_file.read_text())}


def test_each_object_is_measured_by_phrosty_in_its_own_container(tmp_path: Path) -> None:
    """Two objects, two containers at once: each sees its own temporary folder (the stand-in
    fails when it finds the other's files), its Parquet light curve lands in the task's folder
    and comes back as the batch's CSV, Parquet and PNG; the summary says phrosty measured it."""
    require(
        shutil.which("podman") is not None and shutil.which("runc") is not None,
        "podman and runc (Debian packages podman, runc)",
    )
    table = _simulate(tmp_path / "data", ("sn1", "sn2"))
    manifest = _manifest(tmp_path, table, _standin_image(tmp_path))
    result = _run(tmp_path, manifest, "p1")
    assert result["code"] == 0, result["log"]
    assert result["counts"] == {"measured": 2, "skipped": 0, "failed": 0, "invalid": 0}
    for row in result["objects"]:
        assert row["backend"] == "phrosty", row
        assert row["epochs_measured"] == 2, row
        assert row["fallback"] is False
        folder = Path(row["lightcurve"]).parent
        for suffix in ("csv", "parquet", "png"):
            assert (folder / f"{row['oid']}_R062_lightcurve.{suffix}").is_file()
        log = (folder.parent / "task.log").read_text()
        assert "Results saved to /lc_out_dir/data/" in log, log
        assert len(list((folder.parent / "lc" / "data" / row["oid"]).glob("*_R062.pq"))) == 1


def test_on_the_fallback_resources_the_builtin_core_measures_instead(tmp_path: Path) -> None:
    """ORCH_FALLBACK=1 (a stalled GPU queue's fallback job): the task does not start phrosty's
    container (its image does not even exist), the builtin core measures on the CPU, and the
    task says so."""
    table = _simulate(tmp_path / "data", ("sn1",))
    manifest = _manifest(tmp_path, table, "localhost/no-such-image:never")
    spec = manifest["spec"]
    spec["objects"] = str(tmp_path / "builtin.csv")
    # the builtin core reads the lists against the list's folder: images under data/
    lines = (tmp_path / "data" / "objects.csv").read_text().splitlines()
    lines[1] = lines[1].replace("sn1_templates.txt", "data/sn1/templates.txt")
    lines[1] = lines[1].replace("sn1_science.txt", "data/sn1/science.txt")
    Path(spec["objects"]).write_text("\n".join(lines) + "\n")
    spec["pipeline"]["phrosty"]["images_root"] = None
    # one array task of a run without a plan step (as a retry is): it plans, then measures
    result = _run(tmp_path, manifest, "f1", ORCH_ARRAY_TASK_ID="0", ORCH_FALLBACK="1")
    assert result["code"] == 0, result["log"]
    (row,) = result["objects"]
    assert (row["state"], row["backend"], row["fallback"]) == ("measured", "cpu", True)
    task_dir = Path(row["lightcurve"]).parent.parent
    assert not (task_dir / "inputs").exists()  # phrosty's container was never prepared
