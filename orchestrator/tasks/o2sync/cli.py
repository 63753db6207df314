"""``orchestrator o2 ...``: look at and steer an O2Sync job's promoted tags (mode cvmfs).

- ``o2 tags JOB``: the current tag, the promoted tags kept for rollback, the rejected ones.
- ``o2 rollback JOB [TAG]``: point back at TAG (default: the tag promoted before the current
  one). The tag left is marked rejected, so that the next nightly run does not promote it
  again; ``o2 unreject`` undoes that.
- ``o2 unreject JOB TAG``: let future runs probe TAG again.

These work without the daemon: they read the job's manifest from the jobs directory and take
the job's lock, so they refuse (and say so) while a run of the job is in progress.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from orchestrator.cli_options import JOBS_DIR, STATE_DIR
from orchestrator.errors import OrchestratorError
from orchestrator.settings import Settings
from orchestrator.tables import OUTPUT, echo_data
from orchestrator.tasks.o2sync.errors import O2SyncError
from orchestrator.tasks.o2sync.spec import O2SyncSpec
from orchestrator.tasks.o2sync.state import JobState, expand_path, job_lock

o2 = click.Group(
    "o2",
    help="ALICE O2 (kind: O2Sync) jobs: promoted tags, rollback.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _fail(message: str) -> None:
    click.echo(f"orchestrator o2: {message}", err=True)
    sys.exit(1)


def _job(job: str, jobs_dir: Path | None, state_dir: Path | None) -> tuple[O2SyncSpec, Path]:
    """The job's spec and its O2Sync state directory."""
    from orchestrator.manifests.loader import scan_directory
    from orchestrator.tasks.o2sync.spec import O2SyncManifest

    try:
        settings = Settings.resolve(jobs_dir, state_dir)
    except OrchestratorError as exc:  # a bad ORCH_* value: one line, no traceback
        _fail(str(exc))
        raise AssertionError from exc  # unreachable: _fail exits
    scan = scan_directory(settings.jobs_dir)
    loaded = scan.valid.get(job)
    if loaded is None:
        bad = [str(e) for e in scan.invalid.values() if f"name: {job}" in str(e)]
        names = ", ".join(
            sorted(n for n, m in scan.valid.items() if isinstance(m.manifest, O2SyncManifest))
        )
        _fail(
            f"no valid job {job!r} in {settings.jobs_dir}"
            + (f" ({bad[0]})" if bad else "")
            + f"; O2Sync jobs there: {names or 'none'}"
        )
        raise AssertionError  # unreachable: _fail exits
    manifest = loaded.manifest
    if not isinstance(manifest, O2SyncManifest):
        _fail(f"job {job!r} is of kind {manifest.kind}, not O2Sync")
        raise AssertionError
    spec = manifest.spec
    if spec.state_dir:
        return spec, expand_path(spec.state_dir, "state_dir")
    return spec, settings.state_dir / "o2sync" / job


def _tags_view(state: JobState) -> dict[str, Any]:
    return {
        "current": state.current,
        "promoted": state.promoted,
        "rejected": state.rejected,
        "build": state.build,
    }


@o2.command()
@click.argument("job")
@JOBS_DIR
@STATE_DIR
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the same as -o json).")
@OUTPUT
def tags(
    job: str, jobs_dir: Path | None, state_dir: Path | None, as_json: bool, output: str
) -> None:
    """The current tag of JOB, the tags kept for rollback, and the rejected tags.

    Example: orchestrator o2 tags o2physics-cvmfs
    """
    _, job_state_dir = _job(job, jobs_dir, state_dir)
    try:
        state = JobState(job_state_dir)
    except O2SyncError as exc:
        _fail(str(exc))
        return
    view = _tags_view(state)
    if as_json or output in ("json", "yaml"):
        echo_data(view, "json" if as_json else output)
        return
    click.echo(f"current: {view['current'] or '(none)'}")
    click.echo("promoted (oldest first, kept for rollback):")
    for p in view["promoted"]:
        mark = "  <- current" if p["tag"] == view["current"] else ""
        click.echo(f"  {p['tag']}  {p.get('at') or ''}{mark}")
    click.echo("rejected (skipped by future runs):")
    for tag, info in sorted(view["rejected"].items()):
        reason = (info.get("reason") or "").splitlines()
        click.echo(f"  {tag}  {info.get('at') or ''}  {reason[0] if reason else ''}")
    if view["build"]:
        click.echo(f"last good build: {view['build'].get('at')}  {view['build'].get('alienv')}")


@o2.command()
@click.argument("job")
@click.argument("tag", required=False)
@JOBS_DIR
@STATE_DIR
def rollback(job: str, tag: str | None, jobs_dir: Path | None, state_dir: Path | None) -> None:
    """Point JOB back at TAG (default: the tag promoted before the current one).

    Example: orchestrator o2 rollback o2physics-cvmfs daily-20250513-0328-1
    """
    from orchestrator.tasks.o2sync.pointer import PointerFiles
    from orchestrator.tasks.o2sync.tags import payload_dir, tag_key

    spec, job_state_dir = _job(job, jobs_dir, state_dir)
    if spec.mode != "cvmfs" or spec.pointer is None:
        _fail(f"job {job!r} has mode {spec.mode}: rollback switches promoted CVMFS tags only")
        return
    try:
        root = expand_path(spec.cvmfs_root, "cvmfs_root")
        pointer = PointerFiles(spec.pointer, root, spec.arch, spec.package)
        with job_lock(job_state_dir, job):
            state = JobState(job_state_dir)
            current = state.current
            kept = [p["tag"] for p in state.promoted]
            if tag is None:
                if current not in kept or kept.index(current) == 0:
                    _fail(
                        f"no tag before {current or '(none)'} is kept for {job!r} "
                        f"(kept: {', '.join(kept) or 'none'}); name one: o2 rollback {job} TAG"
                    )
                tag = kept[kept.index(current) - 1]
            elif tag not in kept:
                _fail(f"{tag} is not among the tags kept for {job!r}: {', '.join(kept) or 'none'}")
            assert tag is not None
            if tag == current:
                click.echo(f"{job}: already at {tag}")
                return
            if not payload_dir(root, spec.arch, spec.package, tag).is_dir():
                _fail(f"{tag} has no payload under {root} any more; choose another tag")
            pointer.check()
            written = pointer.write(tag, job)
            state.set_current(tag)
            # Every kept tag newer than the target was rolled back over: without this the
            # next nightly run would promote the newest of them again.
            key = tag_key(tag)
            left = [t for t in kept if key is not None and (tag_key(t) or key) > key]
            if current and current not in left:
                left.append(current)
            for t in left:
                state.reject(t, f"rolled back over, to {tag}", None)
    except OrchestratorError as exc:
        _fail(str(exc))
        return
    click.echo(f"{job}: now {tag} (was {current or 'none'}); updated {', '.join(written)}")
    if left:
        click.echo(
            f"skipped by future runs: {', '.join(left)}; allow one again with: "
            f"orchestrator o2 unreject {job} TAG"
        )


@o2.command()
@click.argument("job")
@click.argument("tag")
@JOBS_DIR
@STATE_DIR
def unreject(job: str, tag: str, jobs_dir: Path | None, state_dir: Path | None) -> None:
    """Let future runs of JOB probe (and promote) TAG again.

    Example: orchestrator o2 unreject o2physics-cvmfs daily-20250514-0328-1
    """
    _, job_state_dir = _job(job, jobs_dir, state_dir)
    try:
        with job_lock(job_state_dir, job):
            found = JobState(job_state_dir).unreject(tag)
    except OrchestratorError as exc:
        _fail(str(exc))
        return
    if not found:
        _fail(f"{tag} is not rejected for {job!r}")
    click.echo(f"{job}: {tag} will be probed again by the next run")
