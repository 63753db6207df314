"""The fallback of a stalled queue, the parts that need no cluster: when a move is due and which
tasks move (a pure function of squeue's rows), the fallback job's options and script, and the
run's message. The move itself runs on the private cluster (tests/slurm/test_fallback.py)."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from orchestrator.executors.slurm.executor import _render_fallback
from orchestrator.executors.slurm.options import SlurmOptions
from orchestrator.executors.slurm.parse import JobRow
from orchestrator.executors.slurm.render import BatchRequest, render_batch_script
from orchestrator.executors.slurm.tracked import FallbackLeg, TrackedRun, run_outcome
from orchestrator.executors.slurm.tracking import fallback_due


def _pending(reasons: dict[str, str], state: str = "PENDING") -> dict[str, JobRow]:
    return {
        task: JobRow(f"9_{task}", "9", task, "orch-x", state, None, reason)
        for task, reason in reasons.items()
    }


def test_a_stalled_queue_moves_its_pending_tasks_only_after_the_wait() -> None:
    """Tasks waiting on Resources move once no task started for `after`; not a second before."""
    rows = _pending({"10": "Resources", "2": "Priority", "3": "JobArrayTaskLimit"})
    assert fallback_due(rows, waited_s=29.0, after_s=30.0, when_unavailable=True) is None
    move = fallback_due(rows, waited_s=31.0, after_s=30.0, when_unavailable=True)
    assert move is not None
    assert move.tasks == ["2", "3", "10"]  # numeric order; the throttled one goes too
    assert move.reason == "no task started for 31s (after: 30s; Slurm: Priority, Resources)"


def test_a_down_partition_moves_at_once_unless_told_to_wait() -> None:
    rows = _pending({"0": "PartitionDown", "1": "PartitionDown"})
    move = fallback_due(rows, waited_s=0.0, after_s=3600.0, when_unavailable=True)
    assert move is not None
    assert move.tasks == ["0", "1"]
    assert "PartitionDown" in move.reason
    assert fallback_due(rows, waited_s=0.0, after_s=3600.0, when_unavailable=False) is None
    inactive = _pending({"0": "PartitionInactive"})
    assert fallback_due(inactive, 0.0, 3600.0, when_unavailable=True) is not None


@pytest.mark.parametrize(
    "reason", ["JobHeldUser", "JobHeldAdmin", "Dependency", "BeginTime", "DependencyNeverSatisfied"]
)
def test_tasks_waiting_on_their_own_terms_never_move(reason: str) -> None:
    """A user's hold, a dependency or a begin time is not a stalled queue."""
    rows = _pending({"0": reason, "1": "Resources"})
    move = fallback_due(rows, waited_s=100.0, after_s=10.0, when_unavailable=True)
    assert move is not None
    assert move.tasks == ["1"]
    assert fallback_due(_pending({"0": reason}), 100.0, 10.0, True) is None


def test_tasks_waiting_only_for_the_array_throttle_do_not_count_as_a_stall() -> None:
    """Two long tasks running, the rest held back by %2: the queue is not stalled."""
    rows = _pending({"2": "JobArrayTaskLimit", "3": "JobArrayTaskLimit"})
    assert fallback_due(rows, waited_s=10_000.0, after_s=10.0, when_unavailable=True) is None


def test_nothing_pending_nothing_moves() -> None:
    assert fallback_due({}, 100.0, 1.0, True) is None
    running = _pending({"0": "None"}, state="RUNNING")
    assert fallback_due(running, 100.0, 1.0, True) is None


def _options(**fallback: object) -> SlurmOptions:
    return SlurmOptions.model_validate(
        {
            "partition": "gpu",
            "constraint": "gpu",
            "ntasks": 1,
            "gpus_per_task": 1,
            "cpus_per_task": 32,
            "extra_args": ["--exclusive"],
            "array": "0-9%2",
            "fallback": {"after": "30m", **fallback},
        }
    )


def test_the_fallback_options_replace_the_runs_and_null_removes_one() -> None:
    o = _options(partition="cpu", constraint=None, gpus_per_task=0, cpus_per_task=8)
    fb = o.fallback_options()
    assert (fb.partition, fb.constraint, fb.gpus_per_task, fb.cpus_per_task) == (
        "cpu",
        None,
        None,
        8,
    )
    assert fb.extra_args == ["--exclusive"]  # not named: kept
    assert fb.array == "0-9%2"
    assert fb.fallback is None
    assert _options(extra_args=None).fallback_options().extra_args == []
    assert _options(extra_args=["--licenses=scratch"]).fallback_options().extra_args == [
        "--licenses=scratch"
    ]


@pytest.mark.parametrize(
    ("fallback", "words"),
    [
        ({"after": 0}, "longer than zero"),
        ({"after": "30m", "extra_args": ["--partition=x"]}, "use executor.slurm.partition"),
        ({"after": "30m", "array": "0-3"}, "Extra inputs are not permitted"),
        ({}, "Field required"),
    ],
)
def test_a_bad_fallback_block_is_refused(fallback: dict[str, object], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        SlurmOptions.model_validate({"fallback": fallback})


def _request(tmp_path: Path, options: SlurmOptions) -> BatchRequest:
    return BatchRequest(
        run_id="20261129T010203Z-abcdef",
        job="phot",
        attempt=1,
        argv=["bash", "-c", 'echo "fb=${ORCH_FALLBACK:-0} x=$X task=$ORCH_ARRAY_TASK_ID"'],
        env={},
        workdir=str(tmp_path),
        run_dir=tmp_path / "run",
        options=options,
    )


def test_the_fallback_script_is_rendered_beside_the_runs_and_tells_the_command(
    tmp_path: Path,
) -> None:
    """job-fallback.sbatch: its own tag, the fallback's resources, the run's array (sbatch is
    given the moved tasks), the manifest's variables and ORCH_FALLBACK=1; run as an array task
    it marks itself with the array's job id."""
    req = _request(tmp_path, _options(partition="cpu", constraint=None, gpus_per_task=0))
    (tmp_path / "run").mkdir()
    leg = _render_fallback(req, {"X": "1"}, "0-9%2")
    assert leg is not None
    assert (leg.script.name, leg.throttle, leg.after_s, leg.state) == (
        "job-fallback.sbatch",
        "2",
        1800.0,
        "watching",
    )
    text = leg.script.read_text()
    assert "#SBATCH --job-name=orch-20261129T010203Z-abcdef-fallback" in text
    assert "#SBATCH --partition=cpu" in text
    assert "--constraint" not in text
    assert "--gpus-per-task" not in text
    assert "#SBATCH --array=0-9%2" in text
    own = render_batch_script(req, {"X": "1"})
    assert "export ORCH_FALLBACK" not in own
    assert "#SBATCH --partition=gpu" in own
    env = {**os.environ, "SLURM_JOB_ID": "105", "SLURM_ARRAY_JOB_ID": "100"}
    env["SLURM_ARRAY_TASK_ID"] = "7"
    done = subprocess.run(
        ["bash", str(leg.script)], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.strip() == "fb=1 x=1 task=7"
    # the array's id, which squeue and sacct name the task by (not the task's own job id)
    assert (tmp_path / "run" / "started.7").read_text().strip() == "100"


def test_a_leg_survives_its_record() -> None:
    leg = FallbackLeg(Path("/r/job-fallback.sbatch"), 60.0, False, "4", "cancelling", ["3", "5"])
    leg.reason, leg.at = "no task started for 1m", "2026-11-29T22:00:00+00:00"
    back = FallbackLeg.from_record(leg.record(), now=5.0)
    assert back.record() == leg.record()
    assert back.progress_at == 5.0


def test_the_runs_message_says_which_tasks_ran_on_the_fallback_and_why() -> None:
    t = TrackedRun(
        run_id="r",
        job="j",
        run_dir=Path("/r"),
        created_at=datetime(2026, 11, 29, tzinfo=UTC),
        script=Path("/r/job.sbatch"),
        tasks=["0", "1", "2"],
        max_resubmits=2,
        slurm_job_id="9",
    )
    t.fallback = FallbackLeg(Path("/r/f"), 60.0, True, None, "submitted", ["1", "2"], "why")
    t.fallback.job_id = "12"
    assert t.job_of("0") == "9"
    assert t.job_of("1") == "12"
    ok = {"state": "succeeded", "exit_code": 0, "slurm_state": "COMPLETED"}
    t.task_results = {"0": ok, "1": ok, "2": {**ok, "state": "failed", "exit_code": 3}}
    outcome = run_outcome(t)
    assert outcome.message == (
        "2/3 array tasks succeeded; not succeeded: 2; tasks 1,2 ran on the fallback resources: why"
    )
    t.fallback.state = "cancelling"
    t.fallback.job_id = None
    assert t.job_of("1") is None  # moved, its job not submitted yet: not tracked
