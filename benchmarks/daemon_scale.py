"""Scale benchmark: a real `orchestrator run` daemon over a directory of N manifests.

Prints figures, asserts nothing (timing belongs here, not in tests/). Measures:

* start-up: from process start until the daemon logs ``daemon_ready``, and until the control
  socket's ``status`` lists all N jobs (and how long one ``orchestrator status --json`` takes);
* change-to-scheduled latency: K atomic writes (half new manifests, half schedule changes of
  existing ones), each timed from just before the rename until the daemon's ``job_scheduled``
  log line for that job (the log's ``timestamp`` against ``time.time()`` of the write: both wall
  clock on this machine);
* idle CPU: the daemon's user+system CPU time over ``--idle-s`` seconds with no run due;
* memory: RSS after load, and peak RSS (VmHWM) from /proc.

Schedules lie hours ahead (``every: 6h`` or more, daily crons 12 h from now), so nothing fires
while it measures. Run from the repository root::

    .venv/bin/python benchmarks/daemon_scale.py [--manifests 1000] [--changes 50] [--idle-s 20]
                                                [--polling]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psutil

from orchestrator.control import request
from orchestrator.errors import OrchestratorError

TARGET_STARTUP_S = 5.0
TARGET_CHANGE_MEDIAN_MS = 200.0
TARGET_IDLE_CPU_PCT = 1.0
TARGET_RSS_MB = 150.0

TIMEZONES = ("UTC", "Europe/Zurich", "America/Chicago", "Asia/Tokyo", "Australia/Sydney")


def manifest_text(i: int, now: datetime) -> str:
    """A valid manifest whose first fire lies hours ahead: cron (daily, 12 h from now in one
    of several time zones) or every 6 h or more; one in fifty is suspended."""
    name = f"job-{i:05d}"
    if i % 2 == 0:
        tz = TIMEZONES[i % len(TIMEZONES)]
        local = (now + timedelta(hours=12)).astimezone(ZoneInfo(tz))
        schedule = f'{{cron: "{local.minute} {local.hour} * * *", timezone: {tz}}}'
    else:
        schedule = f"{{every: {6 + i % 5}h}}"
    suspend = "suspend: true\n" if i % 50 == 7 else ""
    return (
        "apiVersion: orchestrator/v1\n"
        "kind: Command\n"
        f"name: {name}\n"
        f"description: scale benchmark job {i}\n"
        f"schedule: {schedule}\n"
        f"{suspend}"
        "policy: {timeout: 10m, history: 20}\n"
        "spec:\n"
        f'  command: [bash, -c, "echo {name} $ORCH_RUN_ID"]\n'
        "  env: {BENCH: '1'}\n"
    )


def write_atomic(path: Path, text: str) -> float:
    """Temp file + rename, as editors do; returns time.time() taken just before the rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    t_write = time.time()
    os.replace(tmp, path)
    return t_write


class LogTail:
    """Reads the daemon's JSON log file incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.events: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        new = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                new.append(event)
        self.events.extend(new)
        return new

    def wait_for(
        self, match: Any, timeout_s: float, proc: subprocess.Popen[bytes]
    ) -> dict[str, Any]:
        for event in self.events:
            if match(event):
                return event
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for event in self.poll():
                if match(event):
                    return event
            if proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {proc.returncode}; see {self.path}")
            time.sleep(0.002)
        raise TimeoutError(f"no matching log line within {timeout_s} s; see {self.path}")


def log_time(event: dict[str, Any]) -> float:
    """The event's ``timestamp`` (ISO 8601 UTC) as seconds since the epoch."""
    stamp = str(event["timestamp"]).replace("Z", "+00:00")
    return datetime.fromisoformat(stamp).timestamp()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def status_jobs(socket_path: Path) -> list[dict[str, Any]] | None:
    try:
        reply = request(socket_path, {"op": "status"}, timeout_s=30)
    except (OrchestratorError, OSError):
        return None
    return list(reply["status"]["jobs"]) if reply.get("ok") else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifests", type=int, default=1000, help="manifests to load")
    parser.add_argument("--changes", type=int, default=50, help="changes to time")
    parser.add_argument("--idle-s", type=float, default=20.0, help="idle CPU sample, seconds")
    parser.add_argument(
        "--polling", action="store_true", help="force the polling observer (ORCH_FORCE_POLLING=1)"
    )
    parser.add_argument(
        "--no-age",
        action="store_true",
        help="start the daemon at once after writing (files still inside the loader's 2 s "
        "'racily clean' window are re-read by the next scan)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="orch-scale-"))
    jobs_dir = root / "jobs.d"
    state_dir = root / "state"
    jobs_dir.mkdir(mode=0o755)
    os.chmod(jobs_dir, 0o755)
    log_path = root / "daemon.log"
    env = dict(os.environ)
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "ORCH_LOG_LEVEL", "ORCH_FORCE_POLLING"):
        env.pop(var, None)
    env.update(
        {
            "ORCH_JOBS_DIR": str(jobs_dir),
            "ORCH_STATE_DIR": str(state_dir),
            "ORCH_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if args.polling:
        env["ORCH_FORCE_POLLING"] = "1"
    proc: subprocess.Popen[bytes] | None = None
    try:
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        for i in range(args.manifests):
            path = jobs_dir / f"job-{i:05d}.yaml"
            path.write_text(manifest_text(i, now))
            os.chmod(path, 0o644)
        write_s = time.perf_counter() - t0
        # Let the files age past the loader's 2 s "racily clean" window, as files on a real
        # host would be, so the start-up scan may cache them.
        if not args.no_age:
            time.sleep(2.1)

        log_file = open(log_path, "wb")  # noqa: SIM115 - handed to the child
        t_start_wall = time.time()
        t_start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "run"],
            env=env,
            stdout=log_file,
            stderr=log_file,
            stdin=subprocess.DEVNULL,
        )
        log_file.close()
        tail = LogTail(log_path)
        ready = tail.wait_for(lambda e: e.get("event") == "daemon_ready", 120, proc)
        starting = tail.wait_for(lambda e: e.get("event") == "daemon_starting", 1, proc)
        watching = tail.wait_for(lambda e: e.get("event") == "watching", 1, proc)
        ready_s = log_time(ready) - t_start_wall
        load_s = log_time(ready) - log_time(starting)
        socket_path = state_dir / "control.sock"
        while True:
            jobs = status_jobs(socket_path)
            if jobs is not None and len(jobs) >= args.manifests:
                break
            if time.perf_counter() - t_start > 120:
                raise TimeoutError("status never listed every job")
            time.sleep(0.01)
        status_s = time.perf_counter() - t_start
        scheduled = sum(1 for j in jobs if j["next_run"])
        suspended = sum(1 for j in jobs if j["suspended"])
        t_cli = time.perf_counter()
        cli = subprocess.run(
            [sys.executable, "-m", "orchestrator", "status", "--json"],
            env=env,
            capture_output=True,
            timeout=60,
            check=True,
        )
        cli_s = time.perf_counter() - t_cli
        cli_jobs = len(json.loads(cli.stdout)["jobs"])

        latencies_ms: list[float] = []
        for k in range(args.changes):
            if k % 2 == 0:  # a new manifest
                name = f"new-{k:04d}"
                text = manifest_text(0, now).replace("job-00000", name)
                path = jobs_dir / f"{name}.yaml"
            else:  # change an existing job's schedule
                i = (k * 37) % args.manifests
                name = f"job-{i:05d}"
                text = (
                    manifest_text(i, now)
                    .replace("schedule: {", f"schedule: {{catchup: {k + 1}m, ", 1)
                    .replace("suspend: true\n", "")
                )
                path = jobs_dir / f"{name}.yaml"
            t_write = write_atomic(path, text)
            event = tail.wait_for(
                lambda e, n=name, t=t_write: (
                    e.get("event") == "job_scheduled" and e.get("job") == n and log_time(e) >= t
                ),
                30,
                proc,
            )
            latencies_ms.append((log_time(event) - t_write) * 1000)
            # A random gap, so that writes do not lock onto the polling observer's cycle
            # (each would then wait almost a full 2 s interval).
            time.sleep(random.uniform(0.1, 2.1) if args.polling else random.uniform(0.1, 0.3))

        time.sleep(1.0)
        daemon = psutil.Process(proc.pid)
        rss_mb = daemon.memory_info().rss / 2**20
        cpu_before = daemon.cpu_times()
        t_idle = time.perf_counter()
        time.sleep(args.idle_s)
        cpu_after = daemon.cpu_times()
        idle_wall = time.perf_counter() - t_idle
        cpu_s = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
        idle_pct = 100 * cpu_s / idle_wall
        rss_idle_mb = daemon.memory_info().rss / 2**20
        hwm_mb = 0.0
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm_mb = int(line.split()[1]) / 1024
        threads = daemon.num_threads()
        errors = [e for e in tail.poll() + tail.events if e.get("level") in ("error", "critical")]
    finally:
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    median_ms = statistics.median(latencies_ms)
    p95_ms = percentile(latencies_ms, 95)
    mode = str(watching.get("mode"))

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    print(
        f"machine: {os.cpu_count()} CPUs ({platform.machine()}), "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )
    print(f"watch mode (daemon's 'watching' line): {mode}")
    print(
        f"manifests: {args.manifests} written in {write_s:.2f} s; {scheduled} scheduled, "
        f"{suspended} suspended; status via CLI lists {cli_jobs}; "
        f"daemon error lines: {len(errors)}"
    )
    print()
    rows = [
        ("start-up: process start -> daemon_ready", f"{ready_s:.2f} s", "", ""),
        ("  of which daemon_starting -> daemon_ready", f"{load_s:.2f} s", "", ""),
        (
            "start-up: process start -> status lists all",
            f"{status_s:.2f} s",
            f"< {TARGET_STARTUP_S:g} s",
            verdict(status_s < TARGET_STARTUP_S),
        ),
        ("`orchestrator status --json` (one CLI call)", f"{cli_s:.2f} s", "", ""),
        (
            f"change -> job_scheduled, median (n={len(latencies_ms)})",
            f"{median_ms:.0f} ms",
            f"< {TARGET_CHANGE_MEDIAN_MS:g} ms" + ("" if mode == "inotify" else " (for inotify)"),
            verdict(median_ms < TARGET_CHANGE_MEDIAN_MS),
        ),
        ("change -> job_scheduled, p95", f"{p95_ms:.0f} ms", "", ""),
        ("change -> job_scheduled, max", f"{max(latencies_ms):.0f} ms", "", ""),
        (
            f"idle CPU over {idle_wall:.0f} s (% of one core)",
            f"{idle_pct:.3f} %",
            f"< {TARGET_IDLE_CPU_PCT:g} %",
            verdict(idle_pct < TARGET_IDLE_CPU_PCT),
        ),
        (
            "RSS after load",
            f"{rss_mb:.1f} MB",
            f"< {TARGET_RSS_MB:g} MB",
            verdict(rss_mb < TARGET_RSS_MB),
        ),
        ("RSS after idle", f"{rss_idle_mb:.1f} MB", "", ""),
        (
            "peak RSS (VmHWM)",
            f"{hwm_mb:.1f} MB",
            f"< {TARGET_RSS_MB:g} MB",
            verdict(hwm_mb < TARGET_RSS_MB),
        ),
        ("daemon threads", str(threads), "", ""),
    ]
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    header = ("figure", "value", "target", "")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    for row in (header, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
