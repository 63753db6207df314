"""``orchestrator validate --cluster``: check Slurm names in manifests against the cluster.

A manifest can be valid in form and still name a partition, QOS or account the cluster does
not have; sbatch would then reject every run. This asks the cluster once (sinfo, sacctmgr) and
reports each unknown name at its line and column. Where the cluster cannot be asked (no
accounting for QOS and accounts), that is said once, and the check is skipped, not failed.
"""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.errors import ManifestProblem
from orchestrator.executors.slurm.commands import SlurmClient, SlurmCommandError
from orchestrator.manifests.loader import LoadedManifest, field_position
from orchestrator.manifests.models import SlurmExecutor


def check_against_cluster(
    loaded: list[LoadedManifest], client: SlurmClient | None = None
) -> tuple[list[ManifestProblem], list[str]]:
    """Problems (unknown names) and notes (checks that could not be made)."""
    client = client or SlurmClient()
    slurm_jobs = [lm for lm in loaded if isinstance(lm.manifest.executor, SlurmExecutor)]
    problems: list[ManifestProblem] = []
    notes: list[str] = []
    if not slurm_jobs:
        return problems, notes

    def known(kind: str, fetch: Callable[[], set[str]]) -> set[str] | None:
        try:
            return fetch()
        except SlurmCommandError as exc:
            notes.append(f"cannot check {kind} names: {exc}")
            return None

    partitions = known("partition", client.partitions)
    qos = known("QOS", client.qos_names)
    accounts = known("account", client.accounts)
    for lm in slurm_jobs:
        assert isinstance(lm.manifest.executor, SlurmExecutor)
        opts = lm.manifest.executor.slurm
        for fld, value, names in (
            ("partition", opts.partition, partitions),
            ("qos", opts.qos, qos),
            ("account", opts.account, accounts),
        ):
            if value is None or names is None or value in names:
                continue
            line, col = field_position(lm.path, ("executor", "slurm", fld))
            choices = ", ".join(sorted(names)) or "none"
            problems.append(
                ManifestProblem(
                    lm.path,
                    line,
                    col,
                    f"executor.slurm.{fld}",
                    f"the cluster has no {fld} {value!r}; it has: {choices}",
                )
            )
    return problems, notes
