"""Looking at a job without running it: ``describe JOB`` (its manifest, schedule in its own
zone, last runs, what it waits for) and ``render JOB`` (the argv, the environment it adds, the
container line and an executor's batch script, exactly as a run would get them)."""

from __future__ import annotations

import shlex
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from orchestrator.cli_common import fail, print_json, settings_from
from orchestrator.cli_complete import complete_jobs
from orchestrator.cli_options import JOBS_DIR, STATE_DIR
from orchestrator.settings import Settings

RUN_ID = "RUN_ID"  # stands for the id a real run gets


def _loaded(settings: Settings, job: str) -> Any:
    """The job's valid manifest from the jobs directory, or a one-line error."""
    from orchestrator.manifests.loader import validate_paths

    if not settings.jobs_dir.is_dir():
        fail(f"{settings.jobs_dir}: jobs directory does not exist")
    loaded, problems = validate_paths([settings.jobs_dir])
    found = next((lm for lm in loaded if lm.name == job), None)
    if found is None:
        bad = [p for p in problems if p.path.stem == job]
        if bad:
            fail(f"job {job!r} does not validate:\n" + "\n".join(str(p) for p in bad))
        known = ", ".join(sorted(lm.name for lm in loaded)) or "none"
        fail(f"no job named {job!r} in {settings.jobs_dir}; known jobs: {known}")
    return found


@click.command()
@click.argument("job", shell_complete=complete_jobs)
@JOBS_DIR
@STATE_DIR
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def render(job: str, jobs_dir: Path | None, state_dir: Path | None, as_json: bool) -> None:
    """Show what a run of JOB would get, without running anything: its argv (with the container
    line), the environment the manifest adds, its working directory, and the batch script a batch
    executor would submit.

    Example: orchestrator render o2physics-source
    """
    from orchestrator.executors import registry
    from orchestrator.tasks.base import build_invocation, run_spec

    settings = settings_from(jobs_dir, state_dir)
    loaded = _loaded(settings, job)
    manifest = loaded.manifest
    executor = registry.build(settings)[manifest.executor_name]
    runs_root = executor.runs_root or settings.runs_dir
    with tempfile.TemporaryDirectory(prefix="orchestrator-render-") as tmp:
        run_dir = Path(tmp) / RUN_ID
        inv = build_invocation(manifest, RUN_ID, run_dir=run_dir, state_dir=settings.state_dir)
        spec = run_spec(
            manifest,
            inv,
            RUN_ID,
            run_dir,
            run_dir / executor.log_name(manifest.executor_options, None),
        )
        sections = executor.preview(spec)

        def shown(text: str) -> str:  # the run directory as a run would have it
            return text.replace(str(run_dir), str(runs_root / RUN_ID))

        data = {
            "job": job,
            "executor": manifest.executor_name,
            "argv": [shown(a) for a in inv.argv],
            "env": {k: shown(v) for k, v in sorted(inv.env_overrides.items())},
            "workdir": inv.workdir or shown(str(run_dir)),
            "timeout_s": manifest.policy.timeout,
            "sections": {title: shown(text) for title, text in sections},
        }
    if as_json:
        print_json(data)
        return
    click.echo(
        f"# {job}: what a run gets ({data['executor']} executor; {RUN_ID} stands for its id)"
    )
    click.echo(f"argv:     {shlex.join(data['argv'])}")
    click.echo(f"workdir:  {data['workdir']}")
    click.echo(
        f"timeout:  {manifest.policy.timeout:g} s (then SIGTERM, SIGKILL after "
        f"{manifest.policy.kill_grace:g} s)"
    )
    click.echo("environment it adds to the daemon's:")
    for key, value in data["env"].items():
        click.echo(f"  {key}={shlex.quote(value)}")
    for title, text in data["sections"].items():
        click.echo(f"--- {title} ---")
        click.echo(text.rstrip("\n"))


@click.command()
@click.argument("job", shell_complete=complete_jobs)
@JOBS_DIR
@STATE_DIR
@click.option("-n", "runs", default=5, show_default=True, help="How many recent runs.")
def describe(job: str, jobs_dir: Path | None, state_dir: Path | None, runs: int) -> None:
    """A job in full: its manifest's file and settings, its schedule with the next fires in its
    own time zone, what it waits for (retries, a slot, a suspension), and its last runs.

    Example: orchestrator describe o2physics-nightly
    """
    from zoneinfo import ZoneInfo

    from orchestrator.cli_runs import _history, _status_and_health
    from orchestrator.manifests.models import CronSchedule, EverySchedule
    from orchestrator.scheduling.triggers import next_fire_times
    from orchestrator.status import describe_schedule

    settings = settings_from(jobs_dir, state_dir)
    loaded = _loaded(settings, job)
    m = loaded.manifest
    data, _ = _status_and_health(settings)
    row: dict[str, Any] = next((j for j in (data or {}).get("jobs", []) if j["name"] == job), {})
    click.echo(f"Name:        {job}")
    click.echo(f"Kind:        {m.kind}" + (f" - {m.description}" if m.description else ""))
    click.echo(f"File:        {loaded.path}")
    click.echo(f"Executor:    {m.executor_name}")
    schedule = describe_schedule(m.schedule) or (
        f"after {', '.join(m.after)}" if m.after else "by hand"
    )
    click.echo(f"Schedule:    {schedule}")
    if isinstance(m.schedule, CronSchedule | EverySchedule) and not m.suspend:
        zone = ZoneInfo(m.schedule.timezone) if isinstance(m.schedule, CronSchedule) else None
        for when in next_fire_times(m.schedule, datetime.now(UTC), 3):
            local = when.astimezone(zone) if zone else when.astimezone()
            click.echo(f"  next:      {local:%Y-%m-%d %H:%M:%S %Z}")
    p = m.policy
    click.echo(
        f"Policy:      concurrency {p.concurrency}, timeout {p.timeout:g} s, "
        f"retries {p.retries}, keeps {p.history} runs"
    )
    if m.requires:
        click.echo(f"Requires:    {', '.join(m.requires)}")
    if m.expect is not None:
        click.echo(
            f"Expect:      a success within {m.expect.success_within:g} s"
            + (f" - {row['overdue']}" if row.get("overdue") else "")
        )
    waits = []
    if m.suspend:
        waits.append(
            "suspended"
            + (
                f" since {row['suspended_at_runtime']['since']} (`orchestrator resume {job}`)"
                if row.get("suspended_at_runtime")
                else " by its manifest"
            )
        )
    waits += [
        f"retry {r.get('attempt')} due {r.get('due')}" for r in row.get("pending_retries") or []
    ]
    if row.get("waiting_for_slot"):
        waits.append(
            f"waiting for a free {row['waiting_for_slot']['executor']} slot since "
            f"{row['waiting_for_slot']['since']}"
        )
    waits += [f"running {r}" for r in row.get("active_runs") or []]
    click.echo("Now:         " + ("; ".join(waits) if waits else "idle"))
    click.echo("Last runs:")
    recent = _history(settings, job, runs)
    if not recent:
        click.echo("  none")
    for r in recent:
        took = f"{r.duration_s:.1f} s" if r.duration_s is not None else ""
        when = (r.started_at or r.created_at).astimezone()
        click.echo(
            f"  {r.run_id}  {r.state!s:<10} {when:%Y-%m-%d %H:%M:%S %Z}  {took:>9}  "
            f"{r.message or ''}".rstrip()
        )
    sys.stdout.flush()


def _changed_fields(in_effect: dict[str, Any], manifest: Any) -> list[tuple[str, str, str]]:
    """(field, old, new) between the daemon's version of a job and the file's."""
    from orchestrator.notify.model import notify_digest

    now = manifest.model_dump(mode="json", exclude={"notify"})
    fields = [(w, json_text(a), json_text(b)) for w, a, b in _changes(in_effect["manifest"], now)]
    if notify_digest(manifest.notify) != in_effect.get("notify"):
        fields.append(("notify", "(URLs not shown)", "changed"))
    return fields


def _changes(old: Any, new: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(field, old, new) for each leaf that differs between two manifests' dumps."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            where = f"{path}.{key}" if path else str(key)
            out += _changes(old.get(key), new.get(key), where)
        return out
    return [] if old == new else [(path, old, new)]


@click.command()
@JOBS_DIR
@STATE_DIR
def diff(jobs_dir: Path | None, state_dir: Path | None) -> None:
    """What a reload would change: jobs added, removed, changed (field by field), and files
    that do not validate (their job keeps its last good version). Exit 0 when nothing would
    change, 1 when something would (as diff(1)).

    Example: orchestrator diff && echo "nothing to reload"
    """
    from orchestrator.control import request
    from orchestrator.errors import ControlError, DaemonNotRunningError
    from orchestrator.manifests.loader import validate_paths

    settings = settings_from(jobs_dir, state_dir)
    try:
        effect = request(settings.control_socket, {"op": "manifests"})["manifests"]
    except DaemonNotRunningError:
        fail(f"the daemon is not running (state directory {settings.state_dir}): nothing to diff")
    except ControlError as exc:
        fail(str(exc))
    loaded, problems = validate_paths([settings.jobs_dir])
    files = {lm.name: lm for lm in loaded}
    changed = False
    for name in sorted(set(files) - set(effect)):
        click.echo(f"+ {name}  (new: {files[name].path})")
        changed = True
    for name in sorted(set(effect) - set(files)):
        bad = any(Path(p.path) == Path(effect[name]["path"]) for p in problems)
        if bad:
            continue  # reported below: the job keeps its last good version
        click.echo(f"- {name}  (removed: {effect[name]['path']})")
        changed = True
    for name in sorted(set(files) & set(effect)):
        if files[name].content_hash == effect[name]["hash"]:
            continue
        fields = _changed_fields(effect[name], files[name].manifest)
        if not fields:
            continue  # comments or layout only: a reload changes nothing
        click.echo(f"~ {name}  ({files[name].path})")
        for where, before, after in fields:
            click.echo(f"    {where}: {before} -> {after}")
        changed = True
    for problem in problems:
        click.echo(f"! {problem}  (not applied: the job keeps its last good version)")
        changed = True
    if not changed:
        click.echo("no changes", err=True)
    sys.exit(1 if changed else 0)


def json_text(value: Any) -> str:
    import json

    return "(none)" if value is None else json.dumps(value)
