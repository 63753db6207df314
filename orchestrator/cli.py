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
from typing import Any

import click

from orchestrator import __version__
from orchestrator.cli_common import (
    echo_retries,
    fail,
    read_job_state,
    settings_from,
    state_dir_problem,
    stored_retries,
)
from orchestrator.cli_options import GLOBAL_JOBS_DIR, GLOBAL_STATE_DIR, JOBS_DIR, STATE_DIR
from orchestrator.errors import (
    OrchestratorError,
    StoreError,
)
from orchestrator.tables import OUTPUT, echo_data


class _LazyGroup(click.Group):
    """Sub-command groups that live with their kind or package, imported only when used, so
    that `orchestrator --help` and the daemon never import numpy/scipy (orchestrator.dia)."""

    extra = {"photometry": "orchestrator.dia.cli:photometry"}

    @property
    def lazy(self) -> dict[str, str]:
        from orchestrator import kinds  # each kind's own group (orchestrator.kinds)

        return {**kinds.cli_groups(), **self.extra}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        lazy = self.lazy
        if cmd_name in lazy:
            import importlib

            module, _, attr = lazy[cmd_name].partition(":")
            try:
                command = getattr(importlib.import_module(module), attr)
            except ModuleNotFoundError as exc:  # an install without the extra it needs
                return _missing_extra(cmd_name, exc.name or str(exc))
            assert isinstance(command, click.Command)
            return _short_helps(command)
        found = super().get_command(ctx, cmd_name)
        return _short_helps(found) if found is not None else None


# One line each for `--help`'s command lists, none cut (click shortens a first sentence that
# does not fit the width); the full text is each command's own --help.
SHORT_HELP = {
    "cancel": "Stop a run, or drop a failed run's pending retry.",
    "check": "One line and exit code 0/1/2, for cron or Nagios.",
    "completion": "Print the shell completion script.",
    "describe": "Show a job in full: schedule, waits, last runs.",
    "diff": "Show what a reload would change.",
    "history": "Runs, newest first (filters: --state, --since).",
    "logs": "Print (or follow) a run's output.",
    "photometry": "Roman SN photometry: difference imaging, light curves.",
    "plan": "Each job and its next fire times.",
    "reload": "Re-read the jobs directory now.",
    "render": "Show what a run would get, without running it.",
    "resume": "Resume a job paused with suspend.",
    "run": "Run the daemon in the foreground.",
    "schema": "Write (or print) the manifest JSON Schema.",
    "status": "Jobs, next and last runs; exit 0/1/2 by health.",
    "suspend": "Pause a job without editing its manifest.",
    "trigger": "Run a job now (--wait: until it ends).",
    "usage": "CPU-hours and GPU-hours per job, for allocation reports.",
    "validate": "Check manifests and the configuration file.",
    "o2": "ALICE O2 (kind: O2Sync): tags, rollback.",
    "o2 rollback": "Point a job back at an earlier promoted tag.",
    "o2 tags": "A job's current tag and the tags kept for rollback.",
    "o2 unreject": "Let future runs probe (and promote) a rejected tag.",
    "photometry run": "Measure one object's light curve from Roman images.",
    "photometry simulate": "Write a synthetic Roman-like data set with its truth.",
}


def _short_helps(command: click.Command, prefix: str = "") -> click.Command:
    name = f"{prefix}{command.name}"
    command.short_help = SHORT_HELP.get(name, command.short_help)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _short_helps(sub, f"{name} ")
    return command


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
@GLOBAL_JOBS_DIR
@GLOBAL_STATE_DIR
def main(jobs_dir: Path | None, state_dir: Path | None) -> None:
    """Run jobs from YAML manifests: scheduled, supervised, recorded.

    Where the jobs and the state are: --jobs-dir/--state-dir (before the command), else
    ORCH_JOBS_DIR/ORCH_STATE_DIR, else orchestrator.toml (./orchestrator.toml, then
    ~/.config/orchestrator/orchestrator.toml: jobs_dir, state_dir), else the defaults.

    \b
    Environment (the README's Settings table says what each does):
      ORCH_JOBS_DIR ORCH_STATE_DIR ORCH_CONFIG ORCH_LOG_LEVEL ORCH_LOG_FORMAT
      ORCH_FORCE_POLLING ORCH_DEBOUNCE_S ORCH_SETTLE_S ORCH_RESCAN_INTERVAL_S
      ORCH_HEARTBEAT_S ORCH_DRAIN_GRACE_S ORCH_MAX_LOCAL_RUNS ORCH_STATE_DIR_FORCE
      ORCH_METRICS_TEXTFILE ORCH_HTTP_ADDRESS ORCH_HTTP_TOKEN ORCH_NOTIFY_BACKOFF_S
      ORCH_SLURM_SPOOL_DIR ORCH_SLURM_POLL_MIN_S ORCH_SLURM_POLL_MAX_S
      ORCH_SLURM_LOST_GRACE_S ORCH_SLURM_CMD_TIMEOUT_S ORCH_DIA_KEEP_MEMORY

    \b
    Examples:
      orchestrator status
      orchestrator trigger heartbeat --wait
      orchestrator logs heartbeat -f
    """
    del jobs_dir, state_dir  # read by each command (cli_common.settings_from)


@main.command()
@JOBS_DIR
@STATE_DIR
@click.option("--log-level", default=None, help="debug, info, warning, error [env ORCH_LOG_LEVEL].")
@click.option(
    "--http-address",
    default=None,
    metavar="HOST:PORT",
    help="Serve /metrics and the read-only status page here, e.g. 127.0.0.1:8765 (off by "
    "default; an address other than loopback needs a token) [env ORCH_HTTP_ADDRESS].",
)
def run(
    jobs_dir: Path | None, state_dir: Path | None, log_level: str | None, http_address: str | None
) -> None:
    """Run the daemon in the foreground (SIGTERM/SIGINT drain, SIGHUP reloads).

    Example: orchestrator run --jobs-dir jobs.d --http-address 127.0.0.1:8765
    """
    import dataclasses

    from orchestrator.daemon import Daemon
    from orchestrator.logs import configure_logging
    from orchestrator.web.access import parse_address

    configure_logging(level=log_level or "info")
    settings = settings_from(jobs_dir, state_dir)
    if http_address:
        settings = dataclasses.replace(settings, http_address=http_address)
    if settings.http_address:
        try:
            parse_address(settings.http_address)
        except OrchestratorError as exc:
            fail(str(exc))
    if not settings.jobs_dir.is_dir():
        fail(f"{settings.jobs_dir}: jobs directory does not exist (create it or pass --jobs-dir)")
    try:
        code = Daemon(settings).run()
    except StoreError as exc:
        fail(state_dir_problem(settings, exc))
    except OrchestratorError as exc:
        fail(str(exc))
    except (OSError, sqlite3.Error) as exc:
        # What escapes the daemon's start is about its state directory (read-only, full,
        # not ours): one line, not a traceback. An OSError about another file says which.
        filename = getattr(exc, "filename", None)
        if filename and not Path(os.fsdecode(filename)).is_relative_to(settings.state_dir):
            fail(f"{os.fsdecode(filename)}: {getattr(exc, 'strerror', None) or exc}")
        fail(state_dir_problem(settings, exc))
    sys.exit(code)


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@JOBS_DIR
@STATE_DIR
@click.option(
    "--cluster",
    is_flag=True,
    help="Also check the names in each job's executor options (partitions, QOS, accounts) "
    "against the system the executor reaches (exit 1 when it cannot be asked).",
)
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
def validate(
    paths: tuple[Path, ...],
    jobs_dir: Path | None,
    state_dir: Path | None,
    cluster: bool,
    strict: bool,
) -> None:
    """Check manifests (files or directories; default: the jobs directory).

    Exit 0 when all are valid; else exit 1 with one `path:line:col: message` line per problem.
    Warnings (`path:line:col: warning: ...`: a placeholder left in, a setting that does
    nothing) do not change the exit code unless --strict. Only regular files are read, each
    within a deadline: a FIFO, a device, a dangling link or a file that does not answer (hung
    file system) is a problem line, never a hang.

    Example: orchestrator validate jobs.d --strict
    """
    import os

    from orchestrator.manifests.loader import validate_paths

    targets = list(paths) or [settings_from(jobs_dir, state_dir).jobs_dir]
    # lexists: a dangling symbolic link exists, and the loader says where it points.
    missing = [p for p in targets if not os.path.lexists(p)]
    for path in missing:
        click.echo(f"{path}:1:1: no such file or directory")
    loaded, problems = validate_paths([p for p in targets if os.path.lexists(p)])
    unchecked = False  # --cluster asked, and the cluster did not answer: not a pass
    if cluster:
        from orchestrator.executors.registry import CLUSTER_CHECKS, resolve

        for target in CLUSTER_CHECKS.values():
            check = resolve(target)(loaded)
            problems = sorted([*problems, *check.problems], key=lambda p: (str(p.path), p.line))
            for note in check.notes:
                click.echo(f"note: {note}", err=True)
            for failure in check.failures:
                click.echo(f"orchestrator: {failure}", err=True)
            unchecked = unchecked or bool(check.failures)
    for problem in problems:
        click.echo(str(problem))
    from orchestrator.manifests.warnings import format_warning, warnings_for

    warned = [w for lm in loaded for w in warnings_for(lm)]
    for warning in warned:
        click.echo(format_warning(warning))
    config_bad = bool(warned and strict)
    if not paths:  # the jobs directory: its configuration file too (orchestrator.config)
        from orchestrator.config import ConfigError, config_path, load

        settings = settings_from(jobs_dir, state_dir)
        try:
            load(config_path(settings.jobs_dir))
        except ConfigError as exc:
            click.echo(str(exc))
            config_bad = True
    if problems or missing or unchecked or config_bad:
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
@click.option(
    "--print",
    "to_stdout",
    is_flag=True,
    help="Print the schema instead (an installed package has no schemas/ folder).",
)
def schema(
    jobs_dir: Path | None, state_dir: Path | None, out_dir: Path, check: bool, to_stdout: bool
) -> None:
    """Write the manifest JSON Schema (for editors and CI) into schemas/.

    Example, for an editor with an installed package:
    orchestrator schema --print > ~/.config/orchestrator/manifest.schema.json
    """
    del jobs_dir, state_dir  # accepted like every command's; the schema depends on neither
    from orchestrator.manifests.models import manifest_json_schema

    text = json.dumps(manifest_json_schema(), indent=2, sort_keys=True) + "\n"
    if to_stdout:
        click.echo(text, nl=False)
        return
    target = out_dir / "manifest.schema.json"
    if check:
        current = target.read_text() if target.exists() else ""
        if current != text:
            fail(f"{target} is stale; run 'orchestrator schema'")
        click.echo(f"{target} is up to date")
        return
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    except OSError as exc:
        fail(f"{exc.filename or target}: cannot write the schema: {exc.strerror or exc}")
    click.echo(f"wrote {target}")


@main.command()
@JOBS_DIR
@STATE_DIR
@click.option("-n", "count", default=3, show_default=True, help="Fire times per job.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the same as -o json).")
@OUTPUT
def plan(
    jobs_dir: Path | None, state_dir: Path | None, count: int, as_json: bool, output: str
) -> None:
    """Each job, whether it is valid, and its next fire times in its own time zone.

    Example: orchestrator plan -n 5
    """
    from orchestrator.manifests.loader import scan_directory
    from orchestrator.manifests.models import CronSchedule, EverySchedule
    from orchestrator.scheduling.triggers import next_fire_times
    from orchestrator.status import describe_schedule

    settings = settings_from(jobs_dir, state_dir)
    if not settings.jobs_dir.is_dir():
        fail(f"{settings.jobs_dir}: jobs directory does not exist (create it or pass --jobs-dir)")
    anchors = read_job_state(settings, "anchor")
    retries = read_job_state(settings, "retry")
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
                "timezone": getattr(m.schedule, "timezone", None),
                "pending_retries": stored_retries(retries.get(name)),
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
    if as_json or output in ("json", "yaml"):
        echo_data(rows, "json" if as_json else output)
    else:
        _echo_plan(rows, now)
    if any(not r["valid"] for r in rows):
        sys.exit(1)


def _echo_plan(rows: list[dict[str, Any]], now: datetime) -> None:
    """One row per job, its next fires in its own time zone; errors and retries under it."""
    from zoneinfo import ZoneInfo

    from orchestrator.humanize import ago, clock
    from orchestrator.tables import coloured, render

    cells = []
    for row in rows:
        if not row["valid"]:
            cells.append([Path(row["path"]).name, coloured("INVALID"), "-", "-"])
            continue
        what = row["schedule"] or (
            "after " + ", ".join(row["after"]) if row["after"] else "by hand"
        )
        zone = ZoneInfo(row["timezone"]) if row.get("timezone") else None
        fires = [datetime.fromisoformat(t) for t in row["next_runs"]]
        nxt = ", ".join(clock(t, zone, now) for t in fires)
        if fires:
            nxt = f"{ago(fires[0], now)}: {nxt}"
        state = "suspended" if row["suspended"] else "ok"
        cells.append([row["name"], coloured(state), what, nxt or "-"])
    lines = render(["JOB", "STATE", "SCHEDULE", "NEXT FIRES"], cells)
    click.echo(lines[0])
    for row, line in zip(rows, lines[1:], strict=True):
        click.echo(line)
        for err in (row["error"] or "").splitlines():
            click.echo(f"    {err}")
        echo_retries(row["pending_retries"])


def _add_run_commands() -> None:
    from orchestrator import cli_complete, cli_control, cli_inspect, cli_logs, cli_runs, cli_usage

    for command in (
        cli_runs.status,
        cli_runs.check,
        cli_runs.history,
        cli_logs.logs,
        cli_control.trigger,
        cli_control.cancel,
        cli_control.reload,
        cli_control.suspend,
        cli_control.resume,
        cli_inspect.describe,
        cli_inspect.render,
        cli_inspect.diff,
        cli_complete.completion,
        cli_usage.usage,
    ):
        main.add_command(command)


_add_run_commands()
