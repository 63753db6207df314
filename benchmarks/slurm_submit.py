"""Slurm benchmark: submission rate and status-query cost with many queued runs.

Prints figures, asserts nothing. Against a real cluster: the one named by SLURM_CONF, or a
private single-node cluster brought up with tests/slurm/cluster.sh (root only) and taken down
at the end. It

1. starts a real `orchestrator run` daemon on one manifest whose jobs are submitted held
   (``extra_args: [--hold]``), so that they stay queued and the cluster does no work;
2. triggers N runs through the control socket and times from the first trigger until the
   daemon has logged ``slurm_submitted`` for all N (submissions per second, end to end:
   run record, script rendering, sbatch);
3. counts the Slurm client calls the daemon makes (wrapper scripts on PATH that log each call
   and exec the real command) over several poll cycles, and prints calls per cycle;
4. cancels the N jobs by their tags (scancel by the daemon: `orchestrator cancel`... would be N
   calls; here one `scancel --name=...` per chunk of tags) and stops the daemon by its pid.

    .venv/bin/python benchmarks/slurm_submit.py [--runs 1000] [--cycles 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orchestrator.control import request

REPO = Path(__file__).resolve().parent.parent
CLIENTS = ("sbatch", "squeue", "sacct", "scancel")

MANIFEST = """\
apiVersion: orchestrator/v1
kind: Command
name: held
policy: {concurrency: allow}
executor:
  slurm: {partition: debug, time: 5m, extra_args: [--hold]}
spec: {command: ["true"]}
"""


def write_wrappers(bin_dir: Path, calls_log: Path) -> None:
    bin_dir.mkdir(parents=True)
    for name in CLIENTS:
        real = shutil.which(name)
        if real is None:
            raise SystemExit(f"{name} not on PATH: is Slurm's client installed?")
        wrapper = bin_dir / name
        wrapper.write_text(
            "#!/bin/sh\n"
            f"printf '%s %s\\n' \"$(date +%s.%N)\" {name} >> {calls_log}\n"
            f'exec {real} "$@"\n'
        )
        wrapper.chmod(0o755)


def log_events(path: Path, event: str) -> list[dict[str, object]]:
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == event:
            out.append(rec)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=5, help="poll cycles to count calls over")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="orch-slurm-bench-"))
    cluster_dir: Path | None = None
    env = dict(os.environ)
    if not env.get("SLURM_CONF"):
        cluster_dir = tmp / "cluster"
        subprocess.run(
            ["bash", str(REPO / "tests/slurm/cluster.sh"), "up", str(cluster_dir)],
            check=True,
            timeout=900,
        )
        env["SLURM_CONF"] = str(cluster_dir / "slurm.conf")
    jobs, state, bin_dir = tmp / "jobs.d", tmp / "state", tmp / "bin"
    jobs.mkdir(mode=0o755)
    (jobs / "held.yaml").write_text(MANIFEST)
    (jobs / "held.yaml").chmod(0o644)
    calls_log = tmp / "calls.log"
    write_wrappers(bin_dir, calls_log)
    env.update(
        {
            "PATH": f"{bin_dir}:{env['PATH']}",
            "ORCH_LOG_FORMAT": "json",
            "ORCH_SLURM_POLL_MIN_S": "1",
            "ORCH_SLURM_POLL_MAX_S": "1",  # a fixed cycle, so that cycles can be counted
        }
    )
    daemon_log = tmp / "daemon.log"
    with open(daemon_log, "wb") as fh:
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orchestrator",
                "run",
                "--jobs-dir",
                str(jobs),
                "--state-dir",
                str(state),
            ],
            env=env,
            stdout=fh,
            stderr=fh,
        )
    sock = state / "control.sock"
    try:
        deadline = time.monotonic() + 30
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        t0 = time.monotonic()
        for _ in range(args.runs):
            request(sock, {"op": "trigger", "job": "held"})
        t_triggered = time.monotonic() - t0
        while len(log_events(daemon_log, "slurm_submitted")) < args.runs:
            if daemon.poll() is not None or time.monotonic() - t0 > 1800:
                raise SystemExit("daemon stopped or submissions did not finish in 30 min")
            time.sleep(0.5)
        t_submitted = time.monotonic() - t0
        calls_log.write_text("")
        time.sleep(args.cycles * 1.0 + 0.5)
        lines = calls_log.read_text().split()
        counts = {name: lines.count(name) for name in CLIENTS}
        squeue_calls = max(counts["squeue"], 1)
        version = subprocess.run(
            ["sinfo", "-V"], env=env, capture_output=True, text=True, check=False
        ).stdout.strip()
        print(f"machine: {os.cpu_count()} CPUs; Slurm {version}")
        print(f"runs triggered through the control socket: {args.runs} in {t_triggered:.1f} s")
        print(
            f"all {args.runs} submitted (slurm_submitted logged) after {t_submitted:.1f} s: "
            f"{args.runs / t_submitted:.1f} submissions/s end to end"
        )
        print(
            f"client calls over ~{args.cycles} poll cycles with {args.runs} queued jobs: "
            + ", ".join(f"{k} {v}" for k, v in counts.items())
        )
        per_cycle = (counts["squeue"] + counts["sacct"]) / squeue_calls
        print(
            f"client calls per poll cycle: {per_cycle:.2f}"
            " (squeue once per cycle; sacct only for jobs that left squeue or ended)"
        )
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            daemon.kill()
        tags = [f"orch-{rec['run_id']}" for rec in log_events(daemon_log, "slurm_submitted")]
        for i in range(0, len(tags), 200):
            subprocess.run(
                ["scancel", f"--name={','.join(tags[i : i + 200])}"],
                env=env,
                capture_output=True,
                timeout=120,
                check=False,
            )
        if cluster_dir is not None:
            subprocess.run(
                ["bash", str(REPO / "tests/slurm/cluster.sh"), "down", str(cluster_dir)],
                timeout=300,
                check=False,
            )
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
