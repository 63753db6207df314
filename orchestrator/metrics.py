"""The daemon's Prometheus metrics (``prometheus_client``), from what ``status`` reports.

Written to a node-exporter textfile when ``ORCH_METRICS_TEXTFILE`` names one (for login nodes,
where a listening port is unwelcome): the daemon rewrites it atomically at each heartbeat
(``ORCH_HEARTBEAT_S``, 10 s), and node-exporter's textfile collector serves it. Each write is a
snapshot of the daemon's state (gauges; the runs are those the run store keeps, so
``orchestrator_runs`` can go down when old runs are pruned: use it for states, not rates).

    orchestrator_up                                   1 while the daemon writes
    orchestrator_health                               0 ok, 1 degraded, 2 down (as `check`)
    orchestrator_manifest_errors                      manifests that do not validate
    orchestrator_job_valid{job}                       1 valid, 0 not
    orchestrator_job_last_run_succeeded{job}          1, 0 (failed, timed out, lost, ...)
    orchestrator_job_last_run_duration_seconds{job}
    orchestrator_job_last_finish_timestamp_seconds{job}
    orchestrator_job_overdue{job}                     1 when expect.success_within passed
    orchestrator_job_active_runs{job}
    orchestrator_runs{job,state}                      runs of each state in the store
    orchestrator_executor_tracked_runs{executor}      runs the executor follows (queue depth)
    orchestrator_executor_breaker_open{executor}      1 while submission is paused
    orchestrator_token_seconds_left{job}              an AliEnToken job's token, at its last run
    orchestrator_o2_pointer_age_seconds{job}          since an O2Sync job's pointer last moved
    orchestrator_job_last_success_timestamp_seconds{job}
    orchestrator_job_last_run_cpu_seconds{job}        what the last run used (result.usage)
    orchestrator_job_last_run_max_rss_bytes{job}
    orchestrator_job_last_run_gpu_hours{job}          a batch run's allocated GPU-hours
    orchestrator_runs_waiting_for_slot                runs waiting for a capped executor
    orchestrator_executor_calls{executor,command}     client calls since start (sbatch, squeue, ...)
    orchestrator_executor_call_errors{executor,command}
    orchestrator_run_duration_seconds{job}            histogram of the kept finished runs
    orchestrator_notifications_pending                messages waiting to be sent
    orchestrator_notifications_abandoned              messages given up since the daemon started

Served at ``/metrics`` when the daemon listens (``--http-address``, orchestrator.web), and
written to the textfile; both are the same snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.clock import utcnow
from orchestrator.health import assess

TEXTFILE_ENV = "ORCH_METRICS_TEXTFILE"


DURATION_BUCKETS_S = (1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200)


def registry(
    status: dict[str, Any],
    runs: Mapping[tuple[str, str], int],
    durations: Iterable[tuple[str, str, float]] = (),
    last_success: Mapping[str, float] | None = None,
) -> Any:
    """A fresh registry holding the metrics of one ``status`` answer, the store's counts of
    runs by (job, state), the durations of its finished runs and each job's last success
    (a Unix time)."""
    from prometheus_client import CollectorRegistry, Gauge, Histogram

    reg = CollectorRegistry()

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
        return Gauge(name, doc, labels, registry=reg)

    gauge("orchestrator_up", "1 while the daemon writes its metrics").set(1)
    gauge("orchestrator_health", "0 ok, 1 degraded, 2 down").set(assess(status).code)
    jobs = status["jobs"]
    gauge("orchestrator_manifest_errors", "manifests that do not validate").set(
        sum(1 for j in jobs if not j["valid"])
    )
    valid = gauge("orchestrator_job_valid", "1 when the job's manifest validates", ("job",))
    ok = gauge("orchestrator_job_last_run_succeeded", "1 when the last run succeeded", ("job",))
    took = gauge("orchestrator_job_last_run_duration_seconds", "the last run's duration", ("job",))
    ended = gauge(
        "orchestrator_job_last_finish_timestamp_seconds", "when the last run ended", ("job",)
    )
    late = gauge("orchestrator_job_overdue", "1 when expect.success_within passed", ("job",))
    active = gauge("orchestrator_job_active_runs", "runs under way", ("job",))
    per_result = {
        "token": gauge("orchestrator_token_seconds_left", "a token's lifetime left", ("job",)),
        "pointer": gauge(
            "orchestrator_o2_pointer_age_seconds", "since the O2 pointer last moved", ("job",)
        ),
        "cpu": gauge("orchestrator_job_last_run_cpu_seconds", "CPU time used", ("job",)),
        "rss": gauge("orchestrator_job_last_run_max_rss_bytes", "peak memory", ("job",)),
        "gpu": gauge("orchestrator_job_last_run_gpu_hours", "GPU-hours allocated", ("job",)),
    }
    succeeded = gauge(
        "orchestrator_job_last_success_timestamp_seconds", "when the last success ended", ("job",)
    )
    for name, when in sorted((last_success or {}).items()):
        succeeded.labels(name).set(when)
    now = utcnow()
    for job in jobs:
        name = job["name"]
        valid.labels(name).set(1 if job["valid"] else 0)
        late.labels(name).set(1 if job.get("overdue") else 0)
        active.labels(name).set(len(job.get("active_runs") or []))
        last = job.get("last_run")
        if not last or not last.get("finished_at"):
            continue
        ok.labels(name).set(1 if last["state"] == "succeeded" else 0)
        finish = datetime.fromisoformat(last["finished_at"])
        ended.labels(name).set(finish.timestamp())
        if last.get("started_at"):
            start = datetime.fromisoformat(last["started_at"])
            took.labels(name).set((finish - start).total_seconds())
        _result_metrics(per_result, name, job.get("kind"), last.get("result") or {}, now)
    counted = gauge("orchestrator_runs", "runs in the run store by state", ("job", "state"))
    for (name, state), n in sorted(runs.items()):
        counted.labels(name, state).set(n)
    _executor_metrics(gauge, status["daemon"].get("executors") or {})
    gauge("orchestrator_runs_waiting_for_slot", "runs waiting for a free slot").set(
        status["daemon"].get("waiting_for_slot") or 0
    )
    took_all = Histogram(
        "orchestrator_run_duration_seconds",
        "finished runs kept in the run store, by duration",
        ("job",),
        buckets=DURATION_BUCKETS_S,
        registry=reg,
    )
    for name, _state, seconds in durations:
        took_all.labels(name).observe(seconds)
    notes = status["daemon"].get("notifications") or {}
    gauge("orchestrator_notifications_pending", "messages waiting to be sent").set(
        notes.get("pending") or 0
    )
    gauge("orchestrator_notifications_abandoned", "messages given up").set(
        notes.get("abandoned") or 0
    )
    return reg


def _result_metrics(
    g: dict[str, Any], name: str, kind: str | None, result: dict[str, Any], now: datetime
) -> None:
    """What a job's last run's result says: what it used, a token's time left, the age of an
    O2 pointer."""
    usage = result.get("usage")
    if isinstance(usage, dict):
        g["cpu"].labels(name).set(float(usage.get("cpu_s") or 0))
        if usage.get("max_rss_mb") is not None:
            g["rss"].labels(name).set(float(usage["max_rss_mb"]) * 2**20)
        if usage.get("gpu_hours") is not None:
            g["gpu"].labels(name).set(float(usage["gpu_hours"]))
    valid_until = result.get("valid_until")
    if kind == "AliEnToken" and isinstance(valid_until, str):
        g["token"].labels(name).set((datetime.fromisoformat(valid_until) - now).total_seconds())
    since = result.get("pointer_since")
    if kind == "O2Sync" and isinstance(since, str):
        g["pointer"].labels(name).set((now - datetime.fromisoformat(since)).total_seconds())


def _executor_metrics(gauge: Any, executors: dict[str, Any]) -> None:
    """Per executor: the runs it follows, a paused submission, its client's calls."""
    tracked = gauge("orchestrator_executor_tracked_runs", "runs followed", ("executor",))
    breaker = gauge("orchestrator_executor_breaker_open", "1 while paused", ("executor",))
    calls = gauge(
        "orchestrator_executor_calls", "client calls since start", ("executor", "command")
    )
    failed = gauge(
        "orchestrator_executor_call_errors", "failed client calls", ("executor", "command")
    )
    for name, health in sorted(executors.items()):
        tracked.labels(name).set(health.get("tracked_runs") or 0)
        breaker.labels(name).set(1 if health.get("breaker") == "open" else 0)
        for command, n in sorted((health.get("calls") or {}).items()):
            calls.labels(name, command).set(n)
            failed.labels(name, command).set((health.get("errors") or {}).get(command, 0))


def snapshot(status: dict[str, Any], store: Any) -> bytes:
    """The metrics in Prometheus' text format, as ``/metrics`` serves them."""
    from prometheus_client import generate_latest

    from orchestrator.store.base import RunState

    last_success = {}
    for job in status["jobs"]:
        if job.get("in_effect"):
            run = store.last_finished_run(job["name"], RunState.SUCCEEDED)
            if run is not None and run.finished_at is not None:
                last_success[job["name"]] = run.finished_at.timestamp()
    reg = registry(status, store.run_counts(), store.finished_durations(), last_success)
    return bytes(generate_latest(reg))


def write_textfile(path: Path, status: dict[str, Any], store: Any) -> None:
    """The metrics in node-exporter's textfile format, replaced atomically (its collector
    never reads half a file)."""
    from orchestrator.atomic import write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, snapshot(status, store), 0o644)
