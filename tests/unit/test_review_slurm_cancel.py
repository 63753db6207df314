"""The Slurm executor's submit/cancel state machine, driven cycle by cycle.

The client is a recording stand-in (a fake): the order of events tested here (an ambiguous
sbatch failure, then a cancel before the retry) cannot be produced on demand by the real test
cluster; tests/slurm covers the real commands. The store is the real SQLite store.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from orchestrator.executors.base import RunSpec
from orchestrator.executors.slurm.commands import SlurmCommandError
from orchestrator.executors.slurm.executor import SlurmExecutor
from orchestrator.executors.slurm.parse import JobRow
from orchestrator.manifests.models import SlurmOptions
from orchestrator.store.base import RunState
from orchestrator.store.sqlite import SQLiteStore


class RecordingClient:
    """sbatch times out ambiguously once; the job was not created (squeue/sacct know nothing)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def sbatch(self, script: Path) -> str:
        self.calls.append("sbatch")
        if self.calls.count("sbatch") == 1:
            raise SlurmCommandError("sbatch", "Socket timed out", transient=True, ambiguous=True)
        return "4242"

    def squeue(self) -> list[JobRow]:
        self.calls.append("squeue")
        return []

    def sacct(self, job_ids: list[str], start: datetime) -> list[JobRow]:
        self.calls.append("sacct")
        return []

    def sacct_by_name(self, names: list[str], start: datetime) -> list[JobRow]:
        self.calls.append("sacct_by_name")
        return []

    def scancel(self, job_ids: list[str] = [], name: str | None = None) -> None:  # noqa: B006
        self.calls.append("scancel")


def test_cancel_after_ambiguous_sbatch_failure_submits_nothing(tmp_path: Path) -> None:
    """A run cancelled while its submission waits to be retried after an ambiguous sbatch
    failure, and found by tag not to exist, ends cancelled without a new sbatch."""
    store = SQLiteStore(tmp_path / "runs.sqlite")
    client = RecordingClient()
    slurm = SlurmExecutor(store=store, client=client)  # type: ignore[arg-type]
    record = store.create_run("job", "hash", "manual", executor="slurm")
    run_dir = tmp_path / record.run_id
    slurm.start(
        RunSpec(
            run_id=record.run_id,
            argv=["true"],
            env={},
            workdir=None,
            timeout_s=60,
            kill_grace_s=1,
            run_dir=run_dir,
            log_path=run_dir / "output.log",
            job="job",
            options=SlurmOptions(),
        )
    )
    slurm._cycle()  # sbatch: "Socket timed out"
    assert client.calls.count("sbatch") == 1
    slurm.cancel(record)
    for tracked in slurm._tracked.values():
        tracked.submit_after = 0.0  # the backoff has passed
    slurm._cycle()
    slurm._cycle()
    assert client.calls.count("sbatch") == 1, client.calls
    outcome = slurm.poll_many([record])[record.run_id]
    assert outcome.state == RunState.CANCELLED
    store.close()
