"""Crash campaign: SIGKILL a real daemon, its run shims and job children N times at random
moments, then audit the run store against the jobs' own side effects.

Prints the figures (cycles, kills by target, runs recorded, fires and retries accounted for,
lost, duplicated, stuck, overlaps of the forbid job, wall time) and every finding; exits 1 when
any figure that must be 0 is not. What each figure counts is defined in
``tests/faults/chaos/audit.py`` (the suite runs a 30-cycle form of the same campaign). Run
from the repository root::

    .venv/bin/python benchmarks/chaos.py [--cycles 100] [--seed S] [--keep] [--verbose]

The seed fixes the sequence of targets, gaps and down times; the moments the kills land on
(and so the findings) still depend on the machine's timing.
"""

from __future__ import annotations

import argparse
import platform
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

# Run as a script from the repository root: the campaign lives with the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.faults.chaos.run import ALL_TARGETS, TARGETS, run_campaign, stop_leftovers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=100, help="kills (default 100)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--min-gap-s", type=float, default=0.1, help="shortest time between kills")
    parser.add_argument("--max-gap-s", type=float, default=1.2, help="longest time between kills")
    parser.add_argument(
        "--max-down-s", type=float, default=1.0, help="longest time the daemon stays down"
    )
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"what to kill, comma-separated, of {','.join(ALL_TARGETS)} "
        f"(default {','.join(TARGETS)}; freeze: SIGSTOP the daemon, then SIGCONT)",
    )
    parser.add_argument(
        "--max-freeze-s", type=float, default=3.0, help="longest SIGSTOP of the daemon"
    )
    parser.add_argument("--keep", action="store_true", help="keep the campaign's directory")
    parser.add_argument("--verbose", action="store_true", help="print each kill")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    root = Path(tempfile.mkdtemp(prefix="orch-chaos-"))
    print(f"machine: {platform.machine()}, Python {platform.python_version()}, {sys.platform}")
    print(f"campaign directory: {root}{'' if args.keep else ' (removed at the end)'}")
    try:
        result = run_campaign(
            root,
            args.cycles,
            seed,
            min_gap_s=args.min_gap_s,
            max_gap_s=args.max_gap_s,
            max_down_s=args.max_down_s,
            max_freeze_s=args.max_freeze_s,
            targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
            say=print if args.verbose else (lambda _line: None),
        )
    finally:
        stop_leftovers(root)
    print(result.figures())
    findings = result.findings()
    if findings:
        print("findings:")
        print(findings)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if result.clean else 1


if __name__ == "__main__":
    sys.exit(main())
