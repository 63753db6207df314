"""What a campaign did and what its audit found: its figures, and its findings with the
daemon's log lines and the campaign's kills around each."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.faults.chaos.audit import AuditResult
from tests.faults.chaos.records import epoch


@dataclass
class CampaignResult:
    """What a campaign did and what its audit found."""

    seed: int
    cycles: int
    kills: Counter[str]
    daemon_starts: int
    unexpected_exits: list[str]
    orphans: list[str]
    stop_exit_code: int | None
    runs_recorded: int
    states: Counter[str]
    audit: AuditResult
    wall_s: float
    root: Path
    events: list[dict[str, Any]] = field(default_factory=list, repr=False)
    timeline: list[tuple[float, str]] = field(default_factory=list, repr=False)

    @property
    def clean(self) -> bool:
        return (
            self.audit.clean
            and not self.unexpected_exits
            and not self.orphans
            and self.stop_exit_code == 0
        )

    def figures(self) -> str:
        """The campaign's figures, one per line."""
        a = self.audit
        kills = (
            f"daemon {self.kills['daemon']} ({self.kills['daemon (before it answered)']} while "
            f"starting), shim {self.kills['shim']}, child {self.kills['child']}"
        )
        if self.kills["freeze"]:
            kills += f"; SIGSTOP/SIGCONT of the daemon {self.kills['freeze']}"
        none_alive = ", ".join(f"{t} {self.kills[t + ' (none alive)']}" for t in ("shim", "child"))
        states = ", ".join(f"{s} {n}" for s, n in sorted(self.states.items()))
        lines = [
            f"seed                     {self.seed}  (ORCH_CHAOS_SEED={self.seed} reproduces "
            "the kill sequence)",
            f"cycles                   {self.cycles}",
            f"kills (SIGKILL)          {kills}; nothing alive to kill: {none_alive}",
            f"daemon starts            {self.daemon_starts}",
            f"runs recorded            {self.runs_recorded} ({states})",
            f"fires expected           {a.fires_expected}: run {a.fires_run}, recorded missed "
            f"{a.fires_missed}, skipped by forbid (log) {a.fires_skipped}",
            f"retries promised         {a.retries_promised}: run {a.retries_run}, skipped by "
            f"forbid (log) {a.retries_skipped}, stored for a next daemon {a.retries_stored}",
            f"lost                     {len(a.lost)}",
            f"duplicated               {len(a.duplicated)}",
            f"stuck                    {len(a.stuck)}",
            f"overlaps (forbid job)    {len(a.overlaps)}",
            f"off-grid fires           {len(a.off_grid)}",
            f"daemon exits not caused  {len(self.unexpected_exits)}",
            f"orphans after stop       {len(self.orphans)}",
            f"clean stop exit code     {self.stop_exit_code}",
            f"wall time                {self.wall_s:.1f} s",
        ]
        return "\n".join(lines)

    def findings(self) -> str:
        """Every finding, one per line (empty when clean)."""
        a = self.audit
        out = []
        for name, items in (
            ("lost", a.lost),
            ("duplicated", a.duplicated),
            ("stuck", a.stuck),
            ("overlap", a.overlaps),
            ("off-grid", a.off_grid),
            ("daemon exit", self.unexpected_exits),
            ("orphan", self.orphans),
        ):
            out += [f"{name}: {item}" for item in items]
        text = "\n".join(out)
        run_ids = sorted(set(RUN_ID.findall(text)))
        moments = [float(t) for t in re.findall(r"\b(?:at|due) (\d{9,}\.\d+)", text)]
        if run_ids or moments:
            out.append("what the daemon logged around these findings, and the campaign's kills:")
            out += trace(run_ids, moments, self.events, self.timeline)
        return "\n".join(out)


RUN_ID = re.compile(r"\b\d{8}T\d{6}Z-[0-9a-f]{6}\b")
_TRACE_KEYS = (
    "job",
    "run_id",
    "trigger",
    "state",
    "attempt",
    "active_run",
    "next_run",
    "missed",
    "catching_up",
    "message",
    "error",
)
_QUIET_EVENTS = {"reconciled", "watching", "lease_takeover"}


def trace(
    run_ids: Iterable[str],
    moments: Iterable[float],
    events: list[dict[str, Any]],
    timeline: list[tuple[float, str]],
) -> list[str]:
    """What happened around each finding: the daemon's log lines from 2 s before to 2 s after
    each line that names one of ``run_ids`` and each of ``moments`` (epoch seconds), each with
    the pid of the daemon that wrote it, interleaved with the campaign's kills."""
    wanted = set(run_ids)
    windows = [(t - 2, t + 2) for t in moments]
    for event in events:
        at = epoch(event.get("timestamp"))
        if at is not None and wanted & set(RUN_ID.findall(json.dumps(event))):
            windows.append((at - 2, at + 2))

    def shown(at: float) -> bool:
        return any(first <= at <= last for first, last in windows)

    lines = [(at, f"campaign: {text}") for at, text in timeline if shown(at)]
    daemon_pid: Any = "?"
    for event in events:
        if event.get("event") == "daemon_starting":
            daemon_pid = event.get("pid")
        at = epoch(event.get("timestamp"))
        if at is None or not shown(at) or event.get("event") in _QUIET_EVENTS:
            continue
        details = " ".join(f"{k}={event[k]}" for k in _TRACE_KEYS if event.get(k) is not None)
        lines.append((at, f"daemon {daemon_pid}: {event.get('event')} {details}"))
    return [f"  {datetime.fromtimestamp(at, UTC):%H:%M:%S.%f} {text}" for at, text in sorted(lines)]
