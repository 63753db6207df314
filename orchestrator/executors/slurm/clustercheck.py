"""``orchestrator validate --cluster``: check Slurm names in manifests against the cluster.

A manifest can be valid in form and still name a partition, QOS or account the cluster does
not have; sbatch would then reject every run. This asks the cluster once (sinfo, and sacctmgr
only when a manifest names a QOS or an account) and reports each unknown name at its line and
column.

Where the cluster cannot be asked (sinfo or sacctmgr missing, failing or timing out), the
check has not been made: that is a failure, so that ``validate --cluster`` in CI or a deploy
script never passes a manifest it could not check. The one exception is a deployment without
accounting (no slurmdbd): sacctmgr then says it has no supported accounting_storage plugin,
QOS and account names cannot exist to be checked, and that check is skipped with a note.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.errors import ManifestProblem
from orchestrator.executors.slurm.commands import SlurmClient, SlurmCommandError
from orchestrator.executors.slurm.options import SlurmExecutor
from orchestrator.manifests.loader import LoadedManifest, field_position

# sacctmgr's answer (exit 1) on a cluster with AccountingStorageType other than slurmdbd
# (measured on Slurm 22.05: "You are not running a supported accounting_storage plugin").
_NO_ACCOUNTING = "not running a supported accounting_storage plugin"


@dataclass
class ClusterCheck:
    """What ``validate --cluster`` found."""

    problems: list[ManifestProblem] = field(default_factory=list)
    # Checks this deployment cannot make (no accounting): skipped, not failed.
    notes: list[str] = field(default_factory=list)
    # Questions the cluster did not answer: the check is incomplete, validate must fail.
    failures: list[str] = field(default_factory=list)


def check_against_cluster(
    loaded: list[LoadedManifest], client: SlurmClient | None = None
) -> ClusterCheck:
    """Unknown names as problems, skipped checks as notes, unanswered questions as failures."""
    client = client or SlurmClient()
    slurm_jobs = [
        (lm, lm.manifest.executor.slurm)
        for lm in loaded
        if isinstance(lm.manifest.executor, SlurmExecutor)
    ]
    result = ClusterCheck()
    if not slurm_jobs:
        return result

    def known(kind: str, fetch: Callable[[], set[str]], needed: bool) -> set[str] | None:
        if not needed:
            return None
        try:
            return fetch()
        except SlurmCommandError as exc:
            if exc.command == "sacctmgr" and _NO_ACCOUNTING in exc.message:
                result.notes.append(f"cannot check {kind} names: the cluster has no accounting")
            else:
                result.failures.append(f"cannot check {kind} names: {exc}")
            return None

    # sinfo is asked whenever there are Slurm jobs, even without a partition named: `--cluster`
    # passes only when a cluster answered. sacctmgr only when there is something to look up.
    # each job's own names and its fallback's (executor.slurm.fallback)
    named = [
        (lm, path, fld, value)
        for lm, opts in slurm_jobs
        for path, block in (
            (("executor", "slurm"), opts),
            (("executor", "slurm", "fallback"), opts.fallback),
        )
        if block is not None
        for fld in ("partition", "qos", "account")
        if (value := getattr(block, fld)) is not None
    ]
    partitions = known("partition", client.partitions, True)
    qos = known("QOS", client.qos_names, any(n[2] == "qos" for n in named))
    accounts = known("account", client.accounts, any(n[2] == "account" for n in named))
    known_names = {"partition": partitions, "qos": qos, "account": accounts}
    for lm, path, fld, value in named:
        names = known_names[fld]
        if names is None or value in names:
            continue
        line, col = field_position(lm.path, (*path, fld))
        choices = ", ".join(sorted(names)) or "none"
        result.problems.append(
            ManifestProblem(
                lm.path,
                line,
                col,
                ".".join((*path, fld)),
                f"the cluster has no {fld} {value!r}; it has: {choices}",
            )
        )
    return result
