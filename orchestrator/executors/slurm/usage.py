"""What a Slurm run used, from accounting: the poll cycle's one ``sacct`` call asks for the
usage fields too, with the jobs' steps (MaxRSS is a step's, not the allocation's), and a run
that ends in that cycle takes its own rows: no extra call per run.

Per task (``NO_TASK`` for a plain job; an array's tasks by index, a task moved to a fallback
job counted with its own): wall_s (ElapsedRaw), cpu_s (TotalCPU, what the processes used),
max_rss_mb (the largest step's MaxRSS), alloc_cpus and alloc_gpus (AllocTRES ``cpu=`` and
``gres/gpu=``), cpu_hours (allocated: elapsed x CPUs, what an allocation is charged for),
gpu_hours (elapsed x GPUs) and the nodes. The run's usage sums the tasks (wall_s: the longest,
max_rss_mb: the largest).

Without accounting (no slurmdbd) there is no usage for Slurm runs; the cluster must gather it
(``JobAcctGatherType`` other than ``none``) for cpu_s and max_rss_mb.
"""

from __future__ import annotations

import re
from typing import Any

from orchestrator.executors.slurm.render import NO_TASK

# After the status fields (parse.SACCT_FORMAT: JobIDRaw,JobID,JobName,State,ExitCode,End)
USAGE_FIELDS = "ElapsedRaw,TotalCPU,MaxRSS,AllocTRES,NodeList"
_JOB_ID, _FIRST = 1, 6  # columns of JobID and of the first usage field
_UNITS = {"K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0 * 1024}


def rss_mb(text: str) -> float | None:
    """MaxRSS as sacct prints it (``51200K``, ``12.5M``, ``2G``, ``0``) in MiB."""
    text = text.strip()
    if not text:
        return None
    match = re.fullmatch(r"([\d.]+)([KMGT]?)", text)
    if match is None:
        return None
    value = float(match.group(1))
    return value * _UNITS[match.group(2)] if match.group(2) else value / (1024 * 1024)


def cpu_seconds(text: str) -> float | None:
    """TotalCPU: ``[D-]HH:MM:SS``, ``MM:SS.mmm`` or ``SS.mmm``."""
    text = text.strip()
    if not text:
        return None
    days, _, rest = text.rpartition("-")
    try:
        parts = [float(p) for p in rest.split(":")]
        total = sum(p * 60**i for i, p in enumerate(reversed(parts)))
        return float(total) + (int(days) * 86400 if days else 0)
    except ValueError:
        return None


def tres(text: str) -> dict[str, str]:
    """``billing=2,cpu=2,gres/gpu=1,mem=1G,node=1`` as a mapping."""
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def parse_usage(text: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Lines of ``sacct -n -P --format=SACCT_FORMAT,USAGE_FIELDS`` (steps included) -> usage
    per (job id, task key): the allocation's row and the peak of its steps."""
    per: dict[tuple[str, str], dict[str, Any]] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < _FIRST + 5 or not parts[_JOB_ID]:
            continue
        job_id = parts[_JOB_ID]
        elapsed, total_cpu, max_rss, alloc, nodes = parts[_FIRST : _FIRST + 5]
        allocation, _, step = job_id.partition(".")
        if "[" in allocation:
            continue  # a pending array's placeholder
        base, _, task = allocation.partition("_")
        entry = per.setdefault((base, task or NO_TASK), {"job": base})
        rss = rss_mb(max_rss)
        if rss is not None:
            entry["max_rss_mb"] = max(entry.get("max_rss_mb", 0.0), rss)
        if step:
            continue
        cpus = int(tres(alloc).get("cpu", "0") or 0)
        gpus = int(tres(alloc).get("gres/gpu", "0") or 0)
        wall = float(elapsed) if elapsed.strip().isdigit() else 0.0
        entry.update(
            wall_s=wall,
            cpu_s=cpu_seconds(total_cpu) or 0.0,
            alloc_cpus=cpus,
            alloc_gpus=gpus,
            cpu_hours=wall * cpus / 3600,
            gpu_hours=wall * gpus / 3600,
            nodes="" if nodes.strip() in ("None assigned", "(null)") else nodes.strip(),
        )
    return {key: entry for key, entry in per.items() if "wall_s" in entry}


def of_run(
    usage: dict[tuple[str, str], dict[str, Any]], job_ids: list[str]
) -> dict[str, dict[str, Any]]:
    """The usage of one run's jobs (its own and its fallback job) per task; a task that ran
    in both (cancelled pending in one) is summed."""
    by_task: dict[str, dict[str, Any]] = {}
    for (base, task), entry in usage.items():
        if base not in job_ids:
            continue
        merged = by_task.get(task)
        by_task[task] = entry if merged is None else total([merged, entry])
    return by_task


def total(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's usage from its tasks'."""
    out: dict[str, Any] = {
        "wall_s": max((e.get("wall_s", 0.0) for e in entries), default=0.0),
        "cpu_s": sum(e.get("cpu_s", 0.0) for e in entries),
        "cpu_hours": sum(e.get("cpu_hours", 0.0) for e in entries),
        "gpu_hours": sum(e.get("gpu_hours", 0.0) for e in entries),
        "alloc_cpus": max((e.get("alloc_cpus", 0) for e in entries), default=0),
        "alloc_gpus": max((e.get("alloc_gpus", 0) for e in entries), default=0),
    }
    rss = [e["max_rss_mb"] for e in entries if "max_rss_mb" in e]
    if rss:
        out["max_rss_mb"] = max(rss)
    # NodeList as Slurm writes it (nid[001-004,009]): kept whole, one per distinct list
    nodes = sorted({n for e in entries for n in str(e.get("nodes") or "").split(" ") if n})
    if nodes:
        out["nodes"] = " ".join(nodes)
    if len(entries) > 1:
        out["tasks"] = len(entries)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}
