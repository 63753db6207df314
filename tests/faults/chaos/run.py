"""The campaign: its cycles of kills against a real daemon, the settle, the clean stop, and
the audit of what was recorded (``run_campaign``); ``stop_leftovers`` after a failure."""

from __future__ import annotations

import random
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.control import request
from orchestrator.errors import OrchestratorError
from tests.conftest import DaemonHarness
from tests.faults.chaos.audit import audit
from tests.faults.chaos.jobs import DEFAULT_JOBS, JOB_SCRIPT, JobPlan
from tests.faults.chaos.kills import kill_victim, live_children, live_shims
from tests.faults.chaos.records import (
    epoch,
    read_effects,
    read_job_state,
    read_retry_dues,
    read_runs,
    read_skips,
)
from tests.faults.chaos.report import CampaignResult

TARGETS = ("daemon", "shim", "child")
# Not a kill: SIGSTOP the daemon for up to ``max_freeze_s``, then SIGCONT (a suspended VM or
# laptop, a ^Z). Not in the default targets: see benchmarks/README.md.
ALL_TARGETS = (*TARGETS, "freeze")
# The interval the jobs are rescheduled to when the kills are over: nothing fires while the
# campaign settles and stops.
QUIET_EVERY_S = 3600.0


class Campaign:
    """One crash campaign in ``root`` (jobs.d, state, the job script, the side-effect file)."""

    def __init__(
        self,
        root: Path,
        cycles: int,
        seed: int,
        min_gap_s: float = 0.1,
        max_gap_s: float = 1.2,
        max_down_s: float = 1.0,
        startup_kill_fraction: float = 0.5,
        max_startup_s: float = 0.15,
        targets: tuple[str, ...] = TARGETS,
        max_freeze_s: float = 3.0,
        settle_timeout_s: float = 30.0,
        plans: tuple[JobPlan, ...] = DEFAULT_JOBS,
        say: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self.root = root
        self.cycles = cycles
        self.seed = seed
        self.rng = random.Random(seed)
        self.min_gap_s = min_gap_s
        self.max_gap_s = max_gap_s
        self.max_down_s = max_down_s
        self.startup_kill_fraction = startup_kill_fraction
        self.max_startup_s = max_startup_s
        unknown = set(targets) - set(ALL_TARGETS)
        if unknown or not targets:
            raise ValueError(f"targets must be some of {', '.join(ALL_TARGETS)}; got {targets}")
        self.max_freeze_s = max_freeze_s
        self.targets = tuple(targets)
        self.settle_timeout_s = settle_timeout_s
        self.plans = plans
        self.say = say
        self.harness = DaemonHarness(root)
        self.script = root / "chaos_job.py"
        self.effects = root / "effects.log"
        self.runs_dir = self.harness.state_dir / "runs"
        self.db_path = self.harness.state_dir / "runs.sqlite"
        self.kills: Counter[str] = Counter()
        self.unexpected_exits: list[str] = []
        self.timeline: list[tuple[float, str]] = []  # (epoch seconds, what the campaign did)
        self.log_offset = 0  # where the current daemon's lines begin in the harness's log

    # -------------------------------------------------------------- set-up

    def _write_manifests(self, every_s: float | None = None) -> None:
        for plan in self.plans:
            text = plan.manifest(sys.executable, self.script, self.effects, self.seed, every_s)
            self.harness.write(f"{plan.name}.yaml", text)

    # -------------------------------------------------------------- cycles

    def _check_daemon(self) -> None:
        """A daemon that exited although nobody killed it is a finding; start another."""
        proc = self.harness.proc
        assert proc is not None
        if proc.poll() is not None:
            tail = self.harness.log_path.read_text()[-3000:].strip().splitlines()[-2:]
            self.unexpected_exits.append(f"daemon exited with {proc.returncode}: {tail}")
            self._note(f"the daemon exited with {proc.returncode} by itself; starting another")
            self._start_daemon()

    def _daemon_answers(self, timeout_s: float) -> bool:
        """Whether the current daemon process answers a ping on its control socket."""
        proc = self.harness.proc
        assert proc is not None
        try:
            reply = request(self.harness.state_dir / "control.sock", {"op": "ping"}, timeout_s)
        except OrchestratorError:
            return False
        return reply.get("pid") == proc.pid

    def _wait_until_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self._daemon_answers(1.0):
            self._check_daemon()
            if time.monotonic() > deadline:
                raise AssertionError(f"the daemon did not answer within {timeout_s:g} s")
            time.sleep(0.05)

    def _kill_daemon(self, when: str) -> None:
        """SIGKILL the daemon, leave it down a random short time, start another."""
        starting = not self._ready_logged()
        self.harness.kill9()
        self.kills["daemon"] += 1
        self.kills["daemon (before it answered)"] += starting
        down_s = self.rng.uniform(0.0, self.max_down_s)
        self._note(
            f"{when}: SIGKILL daemon{' (still starting)' if starting else ''}, down {down_s:.2f} s"
        )
        time.sleep(down_s)
        self._start_daemon()

    def _start_daemon(self) -> None:
        self.log_offset = (
            self.harness.log_path.stat().st_size if self.harness.log_path.exists() else 0
        )
        self.harness.start(wait=False)

    def _logged(self, needle: bytes) -> bool:
        """Whether the current daemon's log lines hold ``needle`` (read, never waited for)."""
        with open(self.harness.log_path, "rb") as log:
            log.seek(self.log_offset)
            return needle in log.read()

    def _ready_logged(self) -> bool:
        return self._logged(b'"daemon_ready"')

    def _wait_for_log(self, needle: bytes, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self._logged(needle) and time.monotonic() < deadline:
            self._check_daemon()
            time.sleep(0.005)

    def _note(self, text: str) -> None:
        self.timeline.append((time.time(), text))
        self.say(text)

    def _cycle(self, number: int) -> None:
        time.sleep(self.rng.uniform(self.min_gap_s, self.max_gap_s))
        self._check_daemon()
        target = self.rng.choice(self.targets)
        if target == "freeze":
            self._freeze(number)
            return
        if target == "daemon":
            self._kill_daemon(f"cycle {number}")
            # Now and then a second SIGKILL lands in the new daemon's start-up, in the moments
            # after it took the lease, when it adopts the runs left behind and catches up
            # missed fires (a kill at a uniformly random moment mostly hits Python's imports).
            if self.rng.random() < self.startup_kill_fraction:
                delay_s = self.rng.uniform(0.0, self.max_startup_s)
                self._wait_for_log(b'"daemon_starting"', 10)
                time.sleep(delay_s)
                self._kill_daemon(f"cycle {number}, again {delay_s:.3f} s after daemon_starting")
            self._wait_until_ready(30)
            return
        candidates = live_shims(self.runs_dir) if target == "shim" else live_children(self.script)
        # Drawn even when there is no candidate, so that a seed names one sequence of choices.
        pick = self.rng.random()
        if not candidates:
            self.kills[f"{target} (none alive)"] += 1
            self._note(f"cycle {number}: no live {target}")
            return
        victim = candidates[int(pick * len(candidates))]
        if kill_victim(victim, group=target == "child"):
            self.kills[target] += 1
            self._note(f"cycle {number}: SIGKILL {victim.what} (pid {victim.pid})")
        else:
            self.kills[f"{target} (none alive)"] += 1
            self._note(f"cycle {number}: {victim.what} ended before the kill")

    def _freeze(self, number: int) -> None:
        proc = self.harness.proc
        assert proc is not None
        frozen_s = self.rng.uniform(0.0, self.max_freeze_s)
        self._note(f"cycle {number}: SIGSTOP daemon for {frozen_s:.2f} s")
        proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(frozen_s)
        finally:
            proc.send_signal(signal.SIGCONT)
        self.kills["freeze"] += 1

    # -------------------------------------------------------------- settle, stop

    def _active_and_retries(self) -> tuple[list[str], int]:
        conn = sqlite3.connect(str(self.db_path), timeout=10)
        try:
            active = [
                r[0]
                for r in conn.execute(
                    "SELECT run_id FROM runs WHERE state IN ('pending', 'running')"
                ).fetchall()
            ]
        finally:
            conn.close()
        retries = read_job_state(self.db_path, "retry")
        pending = sum(len(v) if isinstance(v, list) else 1 for v in retries.values() if v)
        return active, pending

    def _settle(self) -> list[str]:
        """Wait until no run is active and no retry pending (for 1.5 s in a row); return the
        runs still active when the deadline passed."""
        deadline = time.monotonic() + self.settle_timeout_s
        quiet_since: float | None = None
        while True:
            active, pending_retries = self._active_and_retries()
            now = time.monotonic()
            if active or pending_retries:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= 1.5:
                return []
            if now > deadline:
                return active
            time.sleep(0.2)

    def _rescheduled_at(self, since: float) -> dict[str, float]:
        """When the daemon logged each job rescheduled (after ``since``, epoch seconds)."""
        out: dict[str, float] = {}
        for event in self.harness.events():
            at = epoch(event.get("timestamp"))
            if event.get("event") == "job_scheduled" and at is not None and at >= since:
                out.setdefault(str(event.get("job")), at)
        return out

    def run(self) -> CampaignResult:
        """Run the cycles, settle, stop cleanly and audit."""
        t0 = time.monotonic()
        self.script.write_text(JOB_SCRIPT)
        self._write_manifests()
        self._start_daemon()
        try:
            for number in range(1, self.cycles + 1):
                self._cycle(number)
            self._check_daemon()
            self._wait_until_ready(30)
            anchors = {
                job: datetime.fromisoformat(value).timestamp()
                for job, value in read_job_state(self.db_path, "anchor").items()
                if value
            }
            rewritten = time.time()
            self._write_manifests(every_s=QUIET_EVERY_S)
            names = {p.name for p in self.plans}
            deadline = time.monotonic() + 10
            while not names <= set(self._rescheduled_at(rewritten)):
                if time.monotonic() > deadline:
                    raise AssertionError("the daemon did not reschedule both jobs")
                time.sleep(0.1)
            grid_ends = self._rescheduled_at(rewritten)
            stuck = self._settle()
            stop_code: int | None = self.harness.stop(signal.SIGTERM, timeout=60)
        finally:
            proc = self.harness.proc
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
        time.sleep(0.3)
        orphans = []
        for victim in live_shims(self.runs_dir) + live_children(self.script):
            orphans.append(f"{victim.what} (pid {victim.pid}) alive after the clean stop")
            kill_victim(victim, group=False)
        runs = read_runs(self.db_path)
        events = self.harness.events()
        stored = [
            (str(item["retry_of"]), int(item["attempt"]))
            for value in read_job_state(self.db_path, "retry").values()
            for item in ([value] if isinstance(value, dict) else value or [])
        ]
        result = audit(
            self.plans,
            runs,
            read_effects(self.effects),
            read_skips(events),
            anchors,
            grid_ends,
            stuck,
            stored,
            read_retry_dues(events),
        )
        return CampaignResult(
            seed=self.seed,
            cycles=self.cycles,
            kills=self.kills,
            daemon_starts=self.harness.starts,
            unexpected_exits=self.unexpected_exits,
            orphans=orphans,
            stop_exit_code=stop_code,
            runs_recorded=len(runs),
            states=Counter(r.state for r in runs),
            audit=result,
            wall_s=time.monotonic() - t0,
            root=self.root,
            events=events,
            timeline=self.timeline,
        )


def run_campaign(root: Path, cycles: int, seed: int, **options: Any) -> CampaignResult:
    """Run one campaign in ``root`` (an empty directory) and return its figures."""
    return Campaign(root, cycles, seed, **options).run()


def stop_leftovers(root: Path) -> None:
    """Kill whatever a failed campaign in ``root`` left running (shims, children, daemon)."""
    for victim in live_shims(root / "state" / "runs") + live_children(root / "chaos_job.py"):
        kill_victim(victim, group=False)
