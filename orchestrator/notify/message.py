"""The text of a notification: a subject a person can triage from a phone's lock screen, and
a body with what they need before opening a terminal (job, run, state, exit code as a shell
shows it, the task's result, the log's last lines)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.durations import format_duration
from orchestrator.store.base import RunRecord

HEADLINE = {"failure": "FAILED", "recovery": "RECOVERED", "alert": "ALERT", "overdue": "OVERDUE"}
TAIL_MAX_BYTES = 64 * 1024
LINE_MAX_CHARS = 400


@dataclass(frozen=True)
class Text:
    title: str
    body: str


def exit_code_text(code: int | None) -> str:
    """An exit code as a shell shows it (orchestrator.humanize.exit_text; ``none`` without)."""
    from orchestrator.humanize import exit_text

    return "none" if code is None else exit_text(code)


def log_tail(path: str | None, lines: int) -> list[str]:
    """The last ``lines`` lines of a run's log (the last 64 KiB read at most), [] if none."""
    if not path or lines <= 0:
        return []
    try:
        with Path(path).open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - TAIL_MAX_BYTES))
            data = fh.read()
    except OSError:
        return []
    text = data.decode("utf-8", "replace").splitlines()
    if size > TAIL_MAX_BYTES and text:
        text = text[1:]  # the first line read may be a part of one
    return [ln[:LINE_MAX_CHARS] for ln in text[-lines:]]


def result_lines(result: dict[str, Any]) -> list[str]:
    """What a task kind's result says, in words: the summary, then the figures people act
    on (a token's time left, the tag promoted, hosts that failed, the batch's objects)."""
    out: list[str] = []
    if isinstance(result.get("summary"), str):
        out.append(f"result: {result['summary']}")
    if isinstance(result.get("warning"), str):
        out.append(f"warning: {result['warning']}")
    left = result.get("seconds_left")
    if isinstance(left, int | float):
        until = result.get("valid_until") or "?"
        out.append(f"token: {format_duration(max(0, int(left)))} left (until {until})")
    if "promoted" in result or "current" in result:
        out.append(
            f"tag promoted: {result.get('promoted') or 'none'}; current: "
            f"{result.get('current') or 'none'}"
        )
        rejected = [r.get("tag") for r in result.get("rejected") or [] if isinstance(r, dict)]
        if rejected:
            out.append(f"rejected: {', '.join(str(t) for t in rejected)}")
    if isinstance(result.get("hosts_failed"), int) and result.get("hosts"):
        failed = [h for h, r in result["hosts"].items() if isinstance(r, dict) and not r.get("ok")]
        out.append(f"hosts failed: {result['hosts_failed']} of {len(result['hosts'])}")
        out.extend(f"  {h}: {result['hosts'][h].get('error', 'failed')}" for h in failed[:5])
    errors = result.get("errors")
    if isinstance(errors, list):
        out.extend(f"error: {e}" for e in errors[:3] if isinstance(e, str))
    return out


def compose(
    event: str,
    job: str,
    kind: str | None,
    host: str,
    run: RunRecord | None,
    overdue: str | None,
    log_lines: int,
) -> Text:
    """The message for one transition of one job."""
    headline = HEADLINE[event]
    subject = f"[orchestrator] {headline}: {job}"
    body = [f"job: {job}" + (f" ({kind})" if kind else "") + f" on {host}"]
    if event == "overdue" and overdue:
        subject += f": {overdue.removeprefix('overdue: ')}"
        body.append(overdue)
    if run is not None:
        if event in ("failure", "alert"):
            subject += f", run {run.run_id} {run.state}"
        body.append(f"run: {run.run_id} ({run.trigger}, attempt {run.attempt})")
        state = f"state: {run.state}, exit code {exit_code_text(run.exit_code)}"
        if run.duration_s is not None:
            state += f", took {format_duration(round(run.duration_s))}"
        body.append(state)
        if run.finished_at is not None:
            body.append(f"finished: {run.finished_at.isoformat(timespec='seconds')}")
        if run.message:
            body.append(f"message: {run.message}")
        body.extend(result_lines(run.result or {}))
        tail = log_tail(run.log_path, log_lines) if event in ("failure", "alert") else []
        if tail:
            body.append(f"log ({run.log_path}), last {len(tail)} lines:")
            body.extend(f"  {line}" for line in tail)
    return Text(subject, "\n".join(body) + "\n")
