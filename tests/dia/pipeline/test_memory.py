"""keep_freed_memory: a freed large array's pages serve the next one without page faults (glibc);
no_huge_page_advice turns NumPy's huge-page advice off unless the user chose it; and
ORCH_DIA_KEEP_MEMORY=0 leaves both defaults. Each case runs in a fresh interpreter: the
settings are process-wide and must not leak into the test process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from orchestrator.dia.pipeline.memory import NUMPY_ENV

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
    assert kept
    assert not off
    assert faults_default >= 16
    assert faults_kept * 4 <= faults_default


HUGE = """
import numpy as np
from orchestrator.dia.pipeline.memory import no_huge_page_advice

before = np._core.multiarray._get_madvise_hugepage()
print(int(before), int(no_huge_page_advice()), int(np._core.multiarray._get_madvise_hugepage()))
"""


def _huge_page_advice(**env_values: str) -> tuple[bool, bool, bool]:
    env = {k: v for k, v in os.environ.items() if k not in ("ORCH_DIA_KEEP_MEMORY", NUMPY_ENV)}
    env.update(env_values)
    out = subprocess.run(
        [sys.executable, "-c", HUGE], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    before, took, after = (x == "1" for x in out)
    return before, took, after


def test_huge_page_advice_off_unless_the_user_chose_it() -> None:
    """NumPy advises huge pages by default on Linux; no_huge_page_advice turns that off, but not
    where NUMPY_MADVISE_HUGEPAGE was set (the user's choice) or ORCH_DIA_KEEP_MEMORY=0."""
    before, took, after = _huge_page_advice()
    if not before:
        pytest.skip("NumPy gives no huge-page advice here (kernel before 4.6)")
    assert took
    assert not after
    assert _huge_page_advice(**{NUMPY_ENV: "1"}) == (True, False, True)
    assert _huge_page_advice(ORCH_DIA_KEEP_MEMORY="0") == (True, False, True)


def test_only_a_run_sets_up_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_pairs asks for it only with keep_memory (photometry run's own process), for one pair
    as for several: a library caller's process keeps the libraries' defaults. The pairs
    themselves are not the point here, so process_pair_rows is replaced by a stand-in that
    returns its arguments."""
    from orchestrator.dia.pipeline import runner

    calls: list[int] = []

    def spy() -> bool:
        calls.append(1)
        return True

    monkeypatch.setattr(runner, "tune_for_run", spy)
    monkeypatch.setattr(runner, "process_pair_rows", lambda config, s, t: [{"pair": (s, t)}])
    two = [("s1", "t1"), ("s2", "t1")]
    assert runner.run_pairs(None, two, 1) == [{"pair": p} for p in two]  # type: ignore[arg-type]
    assert calls == []
    runner.run_pairs(None, two[:1], 1, keep_memory=True)  # type: ignore[arg-type]
    assert calls == [1]
    runner.run_pairs(None, two, 1, keep_memory=True)  # type: ignore[arg-type]
    assert calls == [1, 1]
