"""keep_freed_memory: a freed large array's pages serve the next one without page faults (glibc),
and ORCH_DIA_KEEP_MEMORY=0 leaves glibc's defaults. Each case runs in a fresh interpreter: the
setting is process-wide and must not leak into the test process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = """
import resource
import numpy as np
from orchestrator.dia.pipeline.memory import keep_freed_memory

kept = keep_freed_memory()

def touch():
    a = np.ones(64 * 2**20 // 8)  # 64 MB, every page written
    float(a[::512].sum())
    del a

touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch()
print(int(kept), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="glibc's mallopt (Linux only)"
)


def _second_touch_faults(env_value: str | None) -> tuple[bool, int]:
    env = dict(os.environ)
    env.pop("ORCH_DIA_KEEP_MEMORY", None)
    if env_value is not None:
        env["ORCH_DIA_KEEP_MEMORY"] = env_value
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "1", int(out[1])


def test_freed_memory_is_reused_without_page_faults() -> None:
    """Kept: the second 64 MB array faults (almost) no page in; with the defaults it is a fresh
    mapping, faulted in again (32 faults with 2 MB pages, 16,384 with 4 kB ones)."""
    kept, faults_kept = _second_touch_faults(None)
    off, faults_default = _second_touch_faults("0")
    assert kept and not off
    assert faults_default >= 16
    assert faults_kept * 4 <= faults_default


def test_only_a_run_of_several_pairs_keeps_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_pairs asks for it only with keep_memory (photometry run's own process) and more than
    one pair: a library caller's process keeps glibc's defaults. The pairs themselves are not
    the point here, so process_pair is replaced by a stand-in that returns its arguments."""
    from orchestrator.dia.pipeline import runner

    calls: list[int] = []

    def spy() -> bool:
        calls.append(1)
        return True

    monkeypatch.setattr(runner, "keep_freed_memory", spy)
    monkeypatch.setattr(runner, "process_pair", lambda config, s, t: {"pair": (s, t)})
    two = [("s1", "t1"), ("s2", "t1")]
    assert runner.run_pairs(None, two, 1) == [{"pair": p} for p in two]  # type: ignore[arg-type]
    assert calls == []
    runner.run_pairs(None, two[:1], 1, keep_memory=True)  # type: ignore[arg-type]
    assert calls == []
    runner.run_pairs(None, two, 1, keep_memory=True)  # type: ignore[arg-type]
    assert calls == [1]
