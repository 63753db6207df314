"""A PhotometryBatch task through the PIT's phrosty pipeline: its container command line, and
its light curve read back into the batch's layout.

phrosty's command line and outputs, from its usage docs (``phrosty/pipeline.py --help``):
``--oid OID -oc OBJECT_COLLECTION -b BAND -r RA -d DEC -ic IMAGE_COLLECTION -t TEMPLATES -s
SCIENCE -p NPROCS -w NWRITE``, the config file in ``SNPIT_CONFIG``, the lists whitespace-separated
with the header ``path observation_id sca mjd band`` (paths relative to the image collection's
root), the light curve written as ``LC_OUT/data/OID/<uuid>_BAND.pq`` in snappl's light-curve
schema (the same schema our own core writes).

Each task's container sees its own folders, whatever the config says: the two lists at
``/orch_task/`` (read-only), the task's ``lc/`` and ``dia/`` folders at phrosty's output paths
and the task's scratch folder at its temporary path (``pipeline.phrosty.paths``), so parallel
tasks never write into one temporary folder (a failure phrosty's users met). Read back, the
Parquet light curve is copied to ``OID/OID_BAND_lightcurve.parquet`` beside a CSV of the same
rows (``backend`` = ``phrosty``) and a PNG, as the builtin pipeline leaves them.

Peak memory: with ``podman``/``podman-hpc`` the pipeline runs under the runtime's monitor, not
as a child of the task, so the task's ``peak_mb`` is the runtime client's, not phrosty's;
``shifter`` and ``apptainer`` run it as a child, and their figure is phrosty's.
"""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path
from typing import Any

from orchestrator.containers import render_command
from orchestrator.manifests.fields import Mount
from orchestrator.tasks.photometry_batch.plan import Task
from orchestrator.tasks.photometry_batch.spec import PhrostyPipeline

TASK_MOUNT = "/orch_task"  # the task's lists, inside the container
BACKEND = "phrosty"


def phrosty_command(
    task: Task, ph: PhrostyPipeline, folder: Path, scratch: Path, env: dict[str, str]
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of one task's container run; prepares the task's folders."""
    inputs = folder / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(task.templates, inputs / "templates.txt")
    shutil.copyfile(task.science, inputs / "science.txt")
    for sub in ("lc", "dia"):
        (folder / sub).mkdir(exist_ok=True)
    mounts = [
        *ph.container.mounts,
        Mount(source=str(inputs), target=TASK_MOUNT, readonly=True),
        Mount(source=str(folder / "lc"), target=ph.paths.lc_out),
        Mount(source=str(folder / "dia"), target=ph.paths.dia_out),
        Mount(source=str(scratch), target=ph.paths.temp),
    ]
    container = ph.container.model_copy(
        update={"mounts": mounts, "env": {**ph.container.env, "SNPIT_CONFIG": ph.config}}
    )
    argv = [
        *ph.command,
        *("--oid", task.oid, "-oc", ph.object_collection, "-b", task.band),
        *("-r", repr(task.ra), "-d", repr(task.dec), "-ic", ph.image_collection),
        *("-t", f"{TASK_MOUNT}/templates.txt", "-s", f"{TASK_MOUNT}/science.txt"),
        *("-p", str(ph.nprocs), "-w", str(ph.nwrite)),
        *ph.args,
    ]
    return render_command(container, argv, env, ph.workdir)


def phrosty_output(folder: Path, task: Task) -> Path | None:
    """The Parquet light curve phrosty wrote for this task (the newest), or None."""
    found = list((folder / "lc" / "data" / task.oid).glob(f"*_{task.band}.pq"))
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def read_back(folder: Path, task: Task, parquet: Path) -> Path:
    """phrosty's light curve in the batch's layout: the Parquet copied, a CSV of its rows and a
    PNG beside it. Returns the CSV's path."""
    import pyarrow.parquet as pq

    out = folder / task.oid
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{task.oid}_{task.band}_lightcurve"
    shutil.copyfile(parquet, stem.with_suffix(".parquet"))
    table = pq.read_table(parquet)
    rows = [_row(r) for r in table.to_pylist()]
    columns = [*table.column_names, "backend", "template_path"]
    csv_path = stem.with_suffix(".csv")
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(columns)))
        writer.writeheader()
        writer.writerows({k: _text(v) for k, v in r.items()} for r in rows)
    from orchestrator.dia.pipeline.plot import plot_lightcurve

    plot_lightcurve(stem.with_suffix(".png"), rows, f"{task.oid} {task.band} (phrosty)")
    return csv_path


def _row(raw: dict[str, Any]) -> dict[str, Any]:
    """A Parquet row as the batch's CSV and plot read it: ``success`` also false where phrosty
    left the flux empty, the template named, the backend said."""
    flux = raw.get("flux")
    finite = isinstance(flux, int | float) and math.isfinite(flux)
    return {
        **raw,
        "success": bool(raw.get("success", True)) and finite,
        "backend": BACKEND,
        "template_path": str(raw.get("template_name") or raw.get("template_observation_id") or ""),
    }


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)
