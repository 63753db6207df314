"""One word and one line for the state of a deployment, from ``status``'s data (pure).

Exit codes of ``status`` and ``check`` (Nagios' plugin convention, so ``check`` drops into
Nagios, Icinga or a cron wrapper as it is): 0 all well, 1 degraded, 2 the daemon is not running
or not answering. Degraded means something needs a person, though the daemon runs: a manifest
that does not validate, a job whose last run did not succeed (suspended jobs excepted: someone
turned them off), a job overdue (``expect.success_within`` passed without a success), a run
store that does not answer, a jobs directory that is missing, an executor that says it cannot
work (a batch system's circuit breaker open: submission paused).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OK, DEGRADED, DOWN = 0, 1, 2
WORDS = {OK: "OK", DEGRADED: "WARNING", DOWN: "CRITICAL"}  # Nagios' words for 0, 1, 2
NOT_SUCCEEDED = ("failed", "timed_out", "lost")


@dataclass(frozen=True)
class Health:
    code: int
    reasons: list[str] = field(default_factory=list)
    summary: str = ""

    @property
    def line(self) -> str:
        """``ORCHESTRATOR OK - 9 jobs, ...`` (Nagios' first line)."""
        text = "; ".join(self.reasons) if self.reasons else self.summary
        return f"ORCHESTRATOR {WORDS[self.code]} - {text}"

    def to_json(self) -> dict[str, Any]:
        state = {OK: "ok", DEGRADED: "degraded", DOWN: "down"}[self.code]
        return {"code": self.code, "state": state, "reasons": self.reasons, "line": self.line}


def assess(status: dict[str, Any]) -> Health:
    """The health of what ``status`` reports (the daemon's answer, or the files' when down)."""
    daemon = status["daemon"]
    jobs = status["jobs"]
    if not daemon.get("running"):
        where = daemon.get("state_dir") or "its state directory"
        return Health(DOWN, [f"the daemon is not running (state directory {where})"])
    reasons: list[str] = []
    invalid = [j for j in jobs if not j["valid"]]
    if invalid:
        names = ", ".join(Path(j["path"]).name for j in invalid[:5])
        more = f" and {len(invalid) - 5} more" if len(invalid) > 5 else ""
        reasons.append(f"{len(invalid)} invalid manifest(s): {names}{more}")
    for job in jobs:
        last = job.get("last_run")
        if job["valid"] and not job.get("suspended") and last and last["state"] in NOT_SUCCEEDED:
            reasons.append(f"{job['name']}: last run {last['state']} ({last['run_id']})")
        elif job["valid"] and last and (last.get("result") or {}).get("alert") is True:
            warning = (last.get("result") or {}).get("warning") or "the task raised an alert"
            reasons.append(f"{job['name']}: alert: {warning}")
        if job.get("overdue"):
            reasons.append(f"{job['name']}: {job['overdue']}")
    if daemon.get("jobs_dir_error"):
        reasons.append(str(daemon["jobs_dir_error"]))
    config_error = (daemon.get("config") or {}).get("error")
    if config_error:
        reasons.append(f"configuration file not applied: {str(config_error).splitlines()[0]}")
    store = daemon.get("store") or {}
    if store.get("ok") is False:
        reasons.append(f"run store unavailable: {store.get('error')}")
    for name, executor in sorted((daemon.get("executors") or {}).items()):
        if executor.get("breaker") == "open":
            reasons.append(f"{name}: submission paused ({executor.get('last_error')})")
    valid = sum(1 for j in jobs if j["valid"])
    summary = f"{valid} job(s) valid, daemon pid {daemon.get('pid')} on {daemon.get('host')}"
    return Health(DEGRADED if reasons else OK, reasons, summary)


def not_answering(error: str) -> Health:
    return Health(DOWN, [f"the daemon does not answer: {error}"])
