"""The campaign's jobs: their plans, their manifests, and the script they run, which leaves
one ``start`` and one ``end`` line per run in a side-effect file."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

FORBID_JOB = "chaos-forbid"
ALLOW_JOB = "chaos-allow"

# The job: one O_APPEND write per line (atomic for lines this short), so lines from runs that
# overlap never interleave, and a kill leaves whole lines only.
JOB_SCRIPT = textwrap.dedent(
    """\
    import os, random, sys, time
    effects, job, min_s, max_s, fail_fraction, seed = sys.argv[1:7]
    run_id = os.environ["ORCH_RUN_ID"]
    rng = random.Random(seed + ":" + run_id)
    sleep_s = rng.uniform(float(min_s), float(max_s))
    code = 1 if rng.random() < float(fail_fraction) else 0

    def line(text):
        fd = os.open(effects, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (text + "\\n").encode())
        finally:
            os.close(fd)

    line(f"start {run_id} {job} {os.getpid()} {time.time():.6f}")
    time.sleep(sleep_s)
    line(f"end {run_id} {job} {os.getpid()} {time.time():.6f} {code}")
    sys.exit(code)
    """
)


@dataclass(frozen=True)
class JobPlan:
    """One campaign job: its schedule, policy and how long and how often its command fails."""

    name: str
    concurrency: str
    every_s: float
    retries: int
    retry_backoff_s: float
    catchup_s: float | None
    min_sleep_s: float
    max_sleep_s: float
    fail_fraction: float

    def manifest(
        self, python: str, script: Path, effects: Path, seed: int, every_s: float | None = None
    ) -> str:
        """The job's manifest; ``every_s`` replaces the schedule's interval (and drops the
        catch-up window)."""
        catchup = (
            f", catchup: {self.catchup_s:g}s" if self.catchup_s is not None and not every_s else ""
        )
        argv = [
            python,
            "-I",
            "-S",
            str(script),
            str(effects),
            self.name,
            f"{self.min_sleep_s:g}",
            f"{self.max_sleep_s:g}",
            f"{self.fail_fraction:g}",
            str(seed),
        ]
        return (
            "apiVersion: orchestrator/v1\n"
            "kind: Command\n"
            f"name: {self.name}\n"
            f"schedule: {{every: {every_s or self.every_s:g}s{catchup}}}\n"
            f"policy: {{concurrency: {self.concurrency}, retries: {self.retries}, "
            f"retry_backoff: {self.retry_backoff_s:g}s, kill_grace: 1s, history: 1000000}}\n"
            "spec:\n"
            f"  command: {json.dumps(argv)}\n"
        )


DEFAULT_JOBS = (
    JobPlan(FORBID_JOB, "forbid", 1.0, 2, 1.0, 30.0, 0.1, 1.4, 0.1),
    JobPlan(ALLOW_JOB, "allow", 1.0, 1, 1.0, None, 0.1, 2.0, 0.1),
)
