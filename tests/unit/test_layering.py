"""Where things may be named: the daemon core knows no executor by name (issue 10)."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "orchestrator"

# Files outside executors/slurm/ that may say "slurm", and why.
ALLOWED = {
    "executors/registry.py": "the registry: one line per executor in each table",
    "scheduling/cron.py": "the cron dialect is the one of crontab(5) and Slurm's scrontab",
}


def test_nothing_outside_the_slurm_package_mentions_slurm() -> None:
    """Every Slurm detail (settings, option models, hints, cluster checks) lives in
    executors/slurm/ and reaches the rest through executors/registry.py."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("executors/slurm/") or rel in ALLOWED:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search("slurm", line, re.IGNORECASE):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert offenders == []
