"""The command line, installed as ``orchestrator``.

Every command takes ``--jobs-dir`` / ``--state-dir`` (else ORCH_JOBS_DIR / ORCH_STATE_DIR,
else the XDG defaults). Commands that change what runs (trigger, cancel, reload) go through
the running daemon's control socket; read-only commands (history, logs) read the store
directly, and ``status`` asks the daemon and falls back to the files when none runs.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from orchestrator import __version__
from orchestrator.cli_options import JOBS_DIR, STATE_DIR
from orchestrator.errors import (
    ControlError,
    DaemonNotRunningError,
    OrchestratorError,
    StoreError,
)
from orchestrator.settings import Settings, SettingsError


def _settings(jobs_dir: Path | None, state_dir: Path | None) -> Settings:
    try:
        return Settings.resolve(jobs_dir, state_dir)
    except SettingsError as exc:
        _fail(str(exc))
        raise  # unreachable: _fail exits


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"orchestrator: {message}", err=True)
    sys.exit(code)


def _state_dir_condition(state_dir: Path) -> str | None:
    """What the state directory's file system says is wrong with it, if it says so: SQLite's
    own words for it ("disk I/O error", "unable to open database file") do not."""
    try:
        fs = os.statvfs(state_dir)
    except OSError:
        return None
    if fs.f_flag & os.ST_RDONLY:
        return "its file system is read-only"
    if fs.f_bavail == 0:
        return "its file system is full"
    return None


def _state_dir_problem(settings: Settings, exc: BaseException) -> str:
    """One line for a state directory that cannot be used (read-only, full, unreadable): the
    directory, what failed, and the file system's condition when it explains the failure."""
    if isinstance(exc, OSError):
        what = exc.strerror or str(exc)
        if exc.filename:
            what += f": {exc.filename}"
    else:
        what = str(exc)
    line = f"state directory {settings.state_dir}: {what}"
    condition = _state_dir_condition(settings.state_dir)
    if condition:
        line += f" ({condition})"
    return " ".join(line.split())


def _print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


class _LazyGroup(click.Group):
    """Sub-command groups that live with their kind or package, imported only when used, so
    that `orchestrator --help` and the daemon never import numpy/scipy (orchestrator.dia)."""

    lazy = {
        "o2": "orchestrator.tasks.o2sync.cli:o2",
        "photometry": "orchestrator.dia.cli:photometry",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            import importlib

            module, _, attr = self.lazy[cmd_name].partition(":")
            try:
                command = getattr(importlib.import_module(module), attr)
            except ModuleNotFoundError as exc:  # an install without the extra it needs
                return _missing_extra(cmd_name, exc.name or str(exc))
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


# The optional dependencies ("extras") a lazily loaded sub-command group needs.
EXTRAS = {"photometry": "photometry"}


def _missing_extra(name: str, module: str) -> click.Command:
    """A stand-in for a sub-command group whose dependencies are not installed: it says which
    and how to install them, and exits 2."""
    extra = EXTRAS.get(name)
    how = f"pip install 'orchestrator[{extra}]'" if extra else "reinstall orchestrator"
    message = f"orchestrator {name} needs {module!r}, which is not installed: {how}"

    @click.command(
        name=name,
        help=message,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    def missing() -> None:
        raise click.UsageError(message)

    return missing


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="orchestrator")
def main() -> None:
    """Run jobs from YAML manifests: scheduled, supervised, recorded."""


@main.command()
@JOBS_DIR
@STATE_DIR
@click.option("--log-level", default=None, help="debug, info, warning, error [env ORCH_LOG_LEVEL].")
def run(jobs_dir: Path | None, state_dir: Path | None, log_level: str | None) -> None:
    """Run the daemon in the foreground (SIGTERM/SIGINT drain, SIGHUP reloads)."""
    from orchestrator.daemon import Daemon
    from orchestrator.logs import configure_logging

    configure_logging(level=log_level or "info")
    settings = _settings(jobs_dir, state_dir)
    if not settings.jobs_dir.is_dir():
        _fail(f"{settings.jobs_dir}: jobs directory does not exist (create it or pass --jobs-dir)")
    try:
        code = Daemon(settings).run()
    except StoreError as exc:
        _fail(_state_dir_problem(settings, exc))
    except OrchestratorError as exc:
        _fail(str(exc))
    except (OSError, sqlite3.Error) as exc:
        # What escapes the daemon's start is about its state directory (read-only, full,
        # not ours): one line, not a traceback. An OSError about another file says which.
        filename = getattr(exc, "filename", None)
        if filename and not Path(os.fsdecode(filename)).is_relative_to(settings.state_dir):
            _fail(f"{os.fsdecode(filename)}: {getattr(exc, 'strerror', None) or exc}")
        _fail(_state_dir_problem(settings, exc))
    sys.exit(code)


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@JOBS_DIR
@STATE_DIR
@click.option(
    "--cluster",
    is_flag=True,
    help="Also check Slurm partition, QOS and account names against the cluster "
    "(exit 1 when sinfo/sacctmgr cannot be asked).",
)
def validate(
    paths: tuple[Path, ...], jobs_dir: Path | None, state_dir: Path | None, cluster: bool
) -> None:
    """Check manifests (files or directories; default: the jobs directory).

    Exit 0 when all are valid; else exit 1 with one `path:line:col: message` line per problem.
    Only regular files are read, each within a deadline: a FIFO, a device, a dangling link or
    a file that does not answer (hung file system) is a problem line, never a hang.
    """
    import os

    from orchestrator.manifests.loader import validate_paths

    targets = list(paths) or [_settings(jobs_dir, state_dir).jobs_dir]
    # lexists: a dangling symbolic link exists, and the loader says where it points.
    missing = [p for p in targets if not os.path.lexists(p)]
    for path in missing:
        click.echo(f"{path}:1:1: no such file or directory")
    loaded, problems = validate_paths([p for p in targets if os.path.lexists(p)])
    unchecked = False  # --cluster asked, and the cluster did not answer: not a pass
    if cluster:
        from orchestrator.executors.slurm.clustercheck import check_against_cluster

        check = check_against_cluster(loaded)
        problems = sorted([*problems, *check.problems], key=lambda p: (str(p.path), p.line))
        for note in check.notes:
            click.echo(f"note: {note}", err=True)
        for failure in check.failures:
            click.echo(f"orchestrator: {failure}", err=True)
        unchecked = bool(check.failures)
    for problem in problems:
        click.echo(str(problem))
    if problems or missing or unchecked:
        sys.exit(1)
    click.echo(f"{len(loaded)} manifest(s) valid", err=True)


@main.command()
@JOBS_DIR
@STATE_DIR
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("schemas"),
    show_default=True,
    help="Directory to write manifest.schema.json into.",
)
@click.option("--check", is_flag=True, help="Exit 1 if the file on disk is stale; write nothing.")
def schema(jobs_dir: Path | None, state_dir: Path | None, out_dir: Path, check: bool) -> None:
    """Write the manifest JSON Schema (for editors and CI) into schemas/."""
    del jobs_dir, state_dir  # accepted like every command's; the schema depends on neither
    from orchestrator.manifests.models import manifest_json_schema

    text = json.dumps(manifest_json_schema(), indent=2, sort_keys=True) + "\n"
    target = out_dir / "manifest.schema.json"
    if check:
        current = target.read_text() if target.exists() else ""
        if current != text:
            _fail(f"{target} is stale; run 'orchestrator schema'")
        click.echo(f"{target} is up to date")
        return
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    except OSError as exc:
        _fail(f"{exc.filename or target}: cannot write the schema: {exc.strerror or exc}")
    click.echo(f"wrote {target}")


@main.command()
@JOBS_DIR
@STATE_DIR
@click.option("-n", "count", default=3, show_default=True, help="Fire times per job.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plan(jobs_dir: Path | None, state_dir: Path | None, count: int, as_json: bool) -> None:
    """Each job, whether it is valid, and its next fire times."""
    from orchestrator.manifests.loader import scan_directory
    from orchestrator.manifests.models import CronSchedule, EverySchedule
    from orchestrator.scheduling.triggers import next_fire_times
    from orchestrator.status import describe_schedule

    settings = _settings(jobs_dir, state_dir)
    if not settings.jobs_dir.is_dir():
        _fail(f"{settings.jobs_dir}: jobs directory does not exist (create it or pass --jobs-dir)")
    anchors = _read_job_state(settings, "anchor")
    retries = _read_job_state(settings, "retry")
    scan = scan_directory(settings.jobs_dir)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for name, loaded in sorted(scan.valid.items()):
        m = loaded.manifest
        times: list[str] = []
        if isinstance(m.schedule, CronSchedule | EverySchedule) and not m.suspend:
            anchor = datetime.fromisoformat(anchors[name]) if anchors.get(name) else now
            times = [t.isoformat() for t in next_fire_times(m.schedule, now, count, start=anchor)]
        rows.append(
            {
                "name": name,
                "path": str(loaded.path),
                "valid": True,
                "kind": m.kind,
                "schedule": describe_schedule(m.schedule),
                "suspended": m.suspend,
                "after": list(m.after),
                "next_runs": times,
                "pending_retries": _stored_retries(retries.get(name)),
                "error": None,
            }
        )
    for path, err in sorted(scan.invalid.items()):
        rows.append(
            {
                "name": None,
                "path": str(path),
                "valid": False,
                "kind": None,
                "schedule": None,
                "suspended": None,
                "after": [],
                "next_runs": [],
                "pending_retries": [],
                "error": str(err),
            }
        )
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        if not row["valid"]:
            click.echo(f"INVALID  {row['path']}")
            for line in row["error"].splitlines():
                click.echo(f"    {line}")
            continue
        what = row["schedule"] or ("after " + ", ".join(row["after"]) if row["after"] else "manual")
        flag = "  (suspended)" if row["suspended"] else ""
        click.echo(f"{row['name']:<30} {row['kind']:<10} {what}{flag}")
        for t in row["next_runs"]:
            click.echo(f"    {t}")
        _echo_retries(row["pending_retries"])
    if any(not r["valid"] for r in rows):
        sys.exit(1)


def _stored_retries(value: Any) -> list[dict[str, Any]]:
    """Pending retries as the daemon stores them: one dict (older versions) or a list."""
    items = [value] if isinstance(value, dict) else value or []
    return sorted((dict(i) for i in items if isinstance(i, dict)), key=lambda i: str(i.get("due")))


def _echo_retries(retries: list[dict[str, Any]]) -> None:
    for r in retries:
        click.echo(
            f"    retry (attempt {r.get('attempt')}) of run {r.get('retry_of')} due {r.get('due')}"
            f"; 'orchestrator cancel {r.get('retry_of')}' drops it"
        )


def _read_job_state(settings: Settings, key: str) -> dict[str, Any]:
    if not settings.db_path.exists():
        return {}
    from orchestrator.store.sqlite import SQLiteStore

    store = SQLiteStore(settings.db_path)
    try:
        return store.all_job_state(key)
    finally:
        store.close()


def _offline_status(settings: Settings) -> dict[str, Any]:
    """Status from the files and the store when no daemon answers."""
    from orchestrator.lease import read_holder
    from orchestrator.manifests.loader import scan_directory
    from orchestrator.manifests.models import CronSchedule, EverySchedule
    from orchestrator.scheduling.triggers import next_fire_times
    from orchestrator.status import JobView, job_row
    from orchestrator.store.sqlite import SQLiteStore

    scan = scan_directory(settings.jobs_dir)
    store = SQLiteStore(settings.db_path) if settings.db_path.exists() else None
    now = datetime.now(UTC)
    rows = []
    try:
        anchors = store.all_job_state("anchor") if store else {}
        retries = store.all_job_state("retry") if store else {}
        for name, loaded in sorted(scan.valid.items()):
            m = loaded.manifest
            nxt = None
            if isinstance(m.schedule, CronSchedule | EverySchedule) and not m.suspend:
                anchor = datetime.fromisoformat(anchors[name]) if anchors.get(name) else now
                found = next_fire_times(m.schedule, now, 1, start=anchor)
                nxt = found[0] if found else None
            last = store.last_run(name) if store else None
            active = store.active_runs(name) if store else []
            row = job_row(JobView(loaded.path, loaded), nxt, last, active)
            row["pending_retries"] = _stored_retries(retries.get(name))
            rows.append(row)
        for path, err in sorted(scan.invalid.items()):
            rows.append(job_row(JobView(path, None, err), None, None, []))
    finally:
        if store:
            store.close()
    return {
        "daemon": {
            "running": False,
            "lease": read_holder(settings.state_dir),
            "jobs_dir": str(settings.jobs_dir),
            "state_dir": str(settings.state_dir),
            "jobs_dir_error": None
            if settings.jobs_dir.is_dir()
            else f"{settings.jobs_dir}: jobs directory does not exist",
            "state_dir_note": None
            if settings.db_path.exists()
            else f"no run history in {settings.state_dir} (no daemon has run with it)",
        },
        "jobs": rows,
    }


@main.command()
@JOBS_DIR
@STATE_DIR
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(jobs_dir: Path | None, state_dir: Path | None, as_json: bool) -> None:
    """Jobs, their validity, next and last runs (from the daemon, or the files when down)."""
    from orchestrator.control import request

    settings = _settings(jobs_dir, state_dir)
    try:
        data = request(settings.control_socket, {"op": "status"})["status"]
    except DaemonNotRunningError:
        try:
            data = _offline_status(settings)
        except (OrchestratorError, OSError, sqlite3.Error) as exc:
            _fail(_state_dir_problem(settings, exc))
    except ControlError as exc:
        _fail(str(exc))
    if as_json:
        _print_json(data)
        return
    d = data["daemon"]
    if d["running"]:
        click.echo(
            f"daemon: running, pid {d['pid']} on {d['host']} since {d['started_at']}"
            f" ({d['watch_mode']})"
        )
    else:
        click.echo("daemon: not running")
    for health in (d.get("executors") or {}).values():
        if health.get("note"):  # an executor says what is wrong (a paused submission)
            click.echo(f"  {health['note']}")
    store_health = d.get("store") or {}
    if store_health.get("ok") is False:
        click.echo(
            f"  run store unavailable since {store_health.get('since')}: "
            f"{store_health.get('error')} (retrying in {store_health.get('next_retry_in_s')} s; "
            f"{store_health.get('deferred_events', 0)} events kept until it answers)"
        )
    if d.get("state_dir_note"):
        click.echo(f"  {d['state_dir_note']}")
    if d.get("jobs_dir_error"):
        click.echo(f"  jobs directory: {d['jobs_dir_error']}")
    for row in data["jobs"]:
        last = row["last_run"]
        last_text = (
            f"last {last['state']} ({last['exit_code']}) "
            f"{last['finished_at'] or last['started_at'] or ''}"
            if last
            else "never run"
        )
        state = "ok" if row["valid"] else "INVALID"
        if row["suspended"]:
            state += ",suspended"
        click.echo(f"{row['name']:<30} {state:<12} next {row['next_run'] or '-':<27} {last_text}")
        if row["error"]:
            for line in row["error"].splitlines():
                click.echo(f"    {line}")
        _echo_retries(row.get("pending_retries") or [])


@main.command()
@click.argument("job", required=False)
@JOBS_DIR
@STATE_DIR
@click.option("-n", "limit", default=20, show_default=True, help="How many runs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def history(
    job: str | None, jobs_dir: Path | None, state_dir: Path | None, limit: int, as_json: bool
) -> None:
    """Finished and active runs, newest first."""
    settings = _settings(jobs_dir, state_dir)
    try:
        runs = _history(settings, job, limit)
    except (OrchestratorError, OSError, sqlite3.Error) as exc:
        _fail(_state_dir_problem(settings, exc))
    if as_json:
        _print_json([r.to_json() for r in runs])
        return
    for r in runs:
        when = r.started_at or r.scheduled_for or r.created_at
        click.echo(
            f"{r.run_id}  {r.job:<24} {r.state!s:<10} exit={r.exit_code!s:<4} "
            f"{r.trigger!s:<9} attempt={r.attempt} {when.isoformat() if when else ''}"
            + (f"  {r.message}" if r.message else "")
        )


def _history(settings: Settings, job: str | None, limit: int) -> list[Any]:
    if not settings.db_path.exists():
        return []
    from orchestrator.store.sqlite import SQLiteStore

    store = SQLiteStore(settings.db_path)
    try:
        return store.history(job, limit=limit)
    finally:
        store.close()


@main.command()
@click.argument("run_id")
@JOBS_DIR
@STATE_DIR
def logs(run_id: str, jobs_dir: Path | None, state_dir: Path | None) -> None:
    """Print a run's output."""
    from orchestrator.store.sqlite import SQLiteStore

    settings = _settings(jobs_dir, state_dir)
    if not settings.db_path.exists():
        _fail(f"no run history in {settings.state_dir}")
    store = SQLiteStore(settings.db_path)
    try:
        run = store.get_run(run_id)
    finally:
        store.close()
    if run is None:
        _fail(f"no run with id {run_id!r}")
    assert run is not None
    log_path = run.log_path
    paths = _log_files(log_path)
    if not paths:
        _fail(f"run {run_id} has no log file (state {run.state})")
        return
    for path in paths:
        if len(paths) > 1:
            sys.stdout.write(f"==> {path.name} <==\n")
            sys.stdout.flush()
        with open(path, "rb") as fh:
            while chunk := fh.read(65536):
                sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
    sys.stdout.flush()


@main.command()
@click.argument("job")
@JOBS_DIR
@STATE_DIR
def trigger(job: str, jobs_dir: Path | None, state_dir: Path | None) -> None:
    """Run JOB now, through the running daemon; prints the run id."""
    _control(_settings(jobs_dir, state_dir), {"op": "trigger", "job": job}, "run_id")


@main.command()
@click.argument("run_id")
@JOBS_DIR
@STATE_DIR
def cancel(run_id: str, jobs_dir: Path | None, state_dir: Path | None) -> None:
    """Cancel an active run (its whole process group: TERM, grace, KILL), or drop the pending
    retry of a failed run (RUN_ID is the failed run; `status` lists pending retries)."""
    _control(_settings(jobs_dir, state_dir), {"op": "cancel", "run_id": run_id}, "run_id")


@main.command()
@JOBS_DIR
@STATE_DIR
def reload(jobs_dir: Path | None, state_dir: Path | None) -> None:
    """Re-read the jobs directory now (the same as SIGHUP)."""
    _control(_settings(jobs_dir, state_dir), {"op": "reload"}, None)


def _log_files(log_path: str | None) -> list[Path]:
    """A run's output files: one, or one per task for a Slurm array (``output-%a.log``)."""
    if not log_path:
        return []
    path = Path(log_path)
    if "%a" not in path.name:
        return [path] if path.exists() else []
    prefix, _, suffix = path.name.partition("%a")
    tasks = []
    for candidate in path.parent.glob(f"{prefix}*{suffix}"):
        task = candidate.name[len(prefix) : len(candidate.name) - len(suffix)]
        if task.isdigit():
            tasks.append((int(task), candidate))
    return [p for _, p in sorted(tasks)]


def _control(settings: Settings, payload: dict[str, Any], key: str | None) -> None:
    from orchestrator.control import request

    try:
        reply = request(settings.control_socket, payload)
    except (DaemonNotRunningError, ControlError) as exc:
        _fail(str(exc))
        return
    if reply.get("deferred"):
        click.echo(f"deferred: {reply['deferred']}", err=True)
        return
    if reply.get("retry_dropped"):
        dropped = reply["retry_dropped"]
        click.echo(
            f"dropped the pending retry (attempt {dropped['attempt']}) of job "
            f"{dropped['job']!r} after run {reply['run_id']}"
        )
        return
    if key:
        click.echo(reply[key])
