"""A stand-in for phrosty's ``pipeline.py``, run in a real podman container by the tests.

phrosty itself cannot run here: it needs CUDA and the Roman SN PIT's container image. What the
orchestrator relies on is reproduced from phrosty's usage docs: the command line (``--oid -oc -b
-r -d -ic -t -s -p -w -v``), the config file named by ``SNPIT_CONFIG`` (required, as phrosty
requires it), lists whitespace-separated with the header ``path observation_id sca mjd band``
whose paths are relative to the image collection's root (``SIMS_DIR`` here), the light curve
written as ``LC_OUT/data/OID/<uuid>_BAND.pq`` in snappl's schema, and ``Results saved to PATH``
as its last log line. Where phrosty writes is read from the config (``lc_out_dir``,
``dia_out_dir``, ``temp_dir`` under ``photometry.phrosty.paths``: this stand-in's own key
names; the orchestrator never reads the config, it only mounts each task's folders there).

It measures with our own core (``photometry run``, CPU), so its light curve is a real one. It
also leaves a marker in its temporary folder while it runs and fails (exit 3) when it finds
another object's marker there: tasks that share a temporary folder are caught.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import yaml


def main() -> int:
    parser = argparse.ArgumentParser(prog="phrosty/pipeline.py")
    parser.add_argument("--oid", required=True)
    parser.add_argument("-oc", "--object-collection", required=True)
    parser.add_argument("-b", "--band", required=True)
    parser.add_argument("-r", "--ra", type=float, required=True)
    parser.add_argument("-d", "--dec", type=float, required=True)
    parser.add_argument("-ic", "--image-collection", required=True)
    parser.add_argument("-t", "--template-images", required=True)
    parser.add_argument("-s", "--science-images", required=True)
    parser.add_argument("-p", "--nprocs", type=int, default=1)
    parser.add_argument("-w", "--nwrite", type=int, default=1)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    config_path = os.environ.get("SNPIT_CONFIG")
    if not config_path:
        print("ERROR: SNPIT_CONFIG is not set", file=sys.stderr)
        return 2
    paths = yaml.safe_load(Path(config_path).read_text())["photometry"]["phrosty"]["paths"]
    temp = Path(paths["temp_dir"])
    others = [p.name for p in temp.glob("running-*") if p.name != f"running-{args.oid}"]
    if others:
        print(f"ERROR: another task's files in {temp}: {others}", file=sys.stderr)
        return 3
    marker = temp / f"running-{args.oid}"
    marker.write_text(str(os.getpid()))
    work = temp / "work"
    argv = [
        *(sys.executable, "-m", "orchestrator.dia.cli", "run", "--oid", args.oid),
        *("-r", repr(args.ra), "-d", repr(args.dec), "-b", args.band),
        *("-t", args.template_images, "-s", args.science_images),
        *("--base-path", os.environ["SIMS_DIR"], "-o", str(work)),
        *("-p", "1", "--backend", "cpu", "--cutout", "0", "--log-level", "warning"),
    ]
    code = subprocess.run(argv, check=False).returncode
    produced = work / args.oid / f"{args.oid}_{args.band}_lightcurve.parquet"
    if produced.is_file():
        out = Path(paths["lc_out_dir"]) / "data" / args.oid
        out.mkdir(parents=True, exist_ok=True)
        target = out / f"{uuid.uuid4()}_{args.band}.pq"
        shutil.copyfile(produced, target)
        print(f"Results saved to {target}", flush=True)
    marker.unlink()
    return code


if __name__ == "__main__":
    sys.exit(main())
