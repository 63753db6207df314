"""Slurm array runs end to end: throttle, per-task results, and a retry of the failed tasks."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import DaemonHarness, wait_for
from tests.slurm.conftest import SlurmCluster
from tests.slurm.test_executor import (
    manifest,
    slurm_daemon,
    slurm_jobs_tagged,
    tag,
    trigger,
    wait_end,
)

__all__ = ["slurm_daemon"]  # the fixture, imported for pytest

TASKS = 30
THROTTLE = 5
FAILING_TASK = "7"

# Each task appends "start <time>" and "end <time>" to times/<task>; task 7 fails (exit 4) the
# first time it runs and succeeds the second time.
TASK_SCRIPT = """\
f={dir}/times/$SLURM_ARRAY_TASK_ID
echo "start $(date +%s.%N)" >> "$f"
sleep 1
echo "end $(date +%s.%N)" >> "$f"
if [ "$SLURM_ARRAY_TASK_ID" = {failing} ] && [ ! -e {dir}/failed-once ]; then
  touch {dir}/failed-once
  exit 4
fi
"""


def intervals(times_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """Per task, the (start, end) of each time it ran."""
    out: dict[str, list[tuple[float, float]]] = {}
    for path in times_dir.iterdir():
        stamps = [line.split() for line in path.read_text().splitlines()]
        starts = [float(t) for word, t in stamps if word == "start"]
        ends = [float(t) for word, t in stamps if word == "end"]
        out[path.name] = list(zip(starts, ends, strict=True))
    return out


def max_overlap(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    most = now = 0
    for _, step in events:  # an end sorts before a start at the same instant
        now += step
        most = max(most, now)
    return most


def test_array_throttle_results_and_retry_of_failed_task(
    slurm_daemon: DaemonHarness, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """An array of 30 tasks with %5 never runs more than 5 at once, records every task's result,
    and its retry (retries: 1) submits an array of the one failed task only, which alone runs
    again and succeeds."""
    h = slurm_daemon
    (tmp_path / "times").mkdir()
    h.write(
        "arr.yaml",
        manifest(
            "arr",
            TASK_SCRIPT.format(dir=tmp_path, failing=FAILING_TASK),
            slurm={"array": f"0-{TASKS - 1}%{THROTTLE}"},
            policy={"retries": 1, "retry_backoff": {"base": "1s", "max": "1s"}},
        ),
    )
    h.start()
    first_id = trigger(h, "arr")
    first = wait_end(h, first_id, 180)
    assert first["state"] == "failed", first
    tasks = first["result"]["tasks"]
    assert sorted(tasks, key=int) == [str(i) for i in range(TASKS)]
    assert {t for t, r in tasks.items() if r["state"] != "succeeded"} == {FAILING_TASK}
    assert (tasks[FAILING_TASK]["state"], tasks[FAILING_TASK]["exit_code"]) == ("failed", 4)
    assert all(r["exit_code"] == 0 for t, r in tasks.items() if t != FAILING_TASK)

    retry = wait_for(
        lambda: next((r for r in h.history("arr") if r["retry_of"] == first_id), None), 30, 0.3
    )
    retry = wait_end(h, retry["run_id"], 60)
    assert retry["state"] == "succeeded", retry
    assert retry["attempt"] == 2
    assert retry["executor_data"]["array"] == f"{FAILING_TASK}%{THROTTLE}"
    assert retry["executor_data"]["tasks"] == [FAILING_TASK]
    assert list(retry["result"]["tasks"]) == [FAILING_TASK]
    assert len(slurm_jobs_tagged(slurm_cluster, tag(first_id))) == 1
    assert len(slurm_jobs_tagged(slurm_cluster, tag(retry["run_id"]))) == 1

    runs = intervals(tmp_path / "times")
    assert sorted(runs, key=int) == [str(i) for i in range(TASKS)]
    assert {t for t, spans in runs.items() if len(spans) != 1} == {FAILING_TASK}
    assert len(runs[FAILING_TASK]) == 2
    first_spans = [spans[0] for spans in runs.values()]
    most = max_overlap(first_spans)
    assert most <= THROTTLE, f"{most} tasks ran at once with %{THROTTLE}"
    assert most >= 2, "the tasks never overlapped: the throttle was not exercised"
