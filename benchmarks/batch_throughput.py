"""Batch throughput of a PhotometryBatch on the CPU at 4088^2: objects per hour per core.

One simulated 4088^2 data set (``photometry simulate --companions 3``: four supernovae 50-70 px
apart on the same images, --epochs science images and one template, reused between
invocations) is the batch's table of four objects. The batch runs as the daemon runs it
(``python -m orchestrator.tasks.photometry_batch``, the local pool), with the default 512-pixel
cutout and on whole frames (``cutout: 0``), each with every object measured alone
(``group: false``: one process and one subtraction per object and pair) and grouped (one
process, one subtraction per pair for all four), every task measured (``recompute``). Prints
per mode: objects, image pairs per object, wall time, objects per hour, objects per hour per
core, the processes' median wall time and largest peak memory. Then a rerun without
``recompute``: every object skipped, and what that costs.

    .venv/bin/python benchmarks/batch_throughput.py [--size 4088] [--epochs 3]
        [--parallel 2] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def ensure_data(data: Path, size: int, epochs: int) -> dict[str, Any]:
    if not (data / "object.json").exists():
        data.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                *(sys.executable, "-m", "orchestrator.dia.cli", "simulate", "--out", str(data)),
                *("--size", str(size), "--epochs", str(epochs), "--templates", "1"),
                *("--companions", "3"),
            ],
            check=True,
            capture_output=True,
        )
    return dict(json.loads((data / "object.json").read_text()))


def run_batch(work: Path, data: Path, obj: dict[str, Any], args: Any, **spec: Any) -> Any:
    table = work / "objects.csv"
    rows = ["oid,ra,dec,band,templates,science"]
    rows += [
        f"{o['oid']},{o['ra']!r},{o['dec']!r},{obj['band']},{data}/templates.txt,{data}/science.txt"
        for o in [obj, *obj["companions"]]
    ]
    table.write_text("\n".join(rows) + "\n")
    manifest = {
        "apiVersion": "orchestrator/v1",
        "kind": "PhotometryBatch",
        "name": "bench",
        "spec": {
            "objects": str(table),
            "output_dir": str(work / "out"),
            "scratch_dir": str(work / "scratch"),
            "parallel": args.parallel,
            **spec,
        },
    }
    (work / "manifest.json").write_text(json.dumps(manifest))
    run_id = f"r{time.monotonic_ns()}"
    env = {
        **os.environ,
        "ORCH_TASK_MANIFEST": str(work / "manifest.json"),
        "ORCH_TASK_RESULT": str(work / f"{run_id}.json"),
        "ORCH_RUN_ID": run_id,
    }
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "orchestrator.tasks.photometry_batch"],
        env=env,
        check=False,
        capture_output=True,
    )
    wall = time.perf_counter() - started
    return wall, json.loads((work / f"{run_id}.json").read_text())


def report(label: str, wall: float, result: dict[str, Any], pairs: int, cores: int) -> None:
    tasks = result["objects"]
    measured = [t for t in tasks if t["state"] == "measured"]
    per_hour = len(measured) / wall * 3600
    task_wall = statistics.median(t["wall_s"] for t in measured) if measured else float("nan")
    peak = max((t["peak_mb"] for t in measured), default=float("nan"))
    print(
        f"{label:<22} {len(tasks):>5} {len(tasks) * pairs:>6} {wall:>8.1f} {per_hour:>10.1f} "
        f"{per_hour / cores:>12.1f} {task_wall:>9.1f} {peak:>8.0f}   {result['summary']}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4088)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--data", type=Path, default=None, help="data set folder (reused)")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    data = args.data or Path(f"/tmp/batch_throughput_{args.size}_{args.epochs}_c3")
    t0 = time.perf_counter()
    obj = ensure_data(data, args.size, args.epochs)
    print(
        f"data {data} ({args.size}^2, {args.epochs} epochs, 1 template): "
        f"{time.perf_counter() - t0:.1f} s; {cores} cores, parallel {args.parallel}"
    )
    print(
        f"{'mode':<22} {'tasks':>5} {'pairs':>6} {'wall s':>8} {'objects/h':>10} "
        f"{'obj/h/core':>12} {'task s':>9} {'peak MB':>8}"
    )
    with tempfile.TemporaryDirectory(prefix="batch_bench_") as tmp:
        work = Path(tmp)
        for label, cutout, group in (
            ("cutout 512, alone", 512, False),
            ("cutout 512, grouped", 512, True),
            ("whole frames, alone", 0, False),
            ("whole frames, grouped", 0, True),
        ):
            pipeline = {"builtin": {"backend": "cpu", "cutout": cutout, "group": group}}
            wall, result = run_batch(work, data, obj, args, pipeline=pipeline, recompute=True)
            report(label, wall, result, args.epochs, cores)
        wall, result = run_batch(
            work, data, obj, args, pipeline={"builtin": {"backend": "cpu", "cutout": 0}}
        )
        print(f"rerun, nothing changed: {wall:.1f} s ({result['summary']})")


if __name__ == "__main__":
    main()
