"""The command line, installed as ``orchestrator``.

Every command takes ``--jobs-dir`` / ``--state-dir`` (else ORCH_JOBS_DIR / ORCH_STATE_DIR,
else the XDG defaults). Commands that change what runs (trigger, cancel, reload) go through
the running daemon's control socket; read-only commands (history, logs) read the store
directly, and ``status`` asks the daemon and falls back to the files when none runs.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import click

from orchestrator import __version__
from orchestrator.cli_common import (
    fail,
    settings_from,
    state_dir_problem,
)
from orchestrator.cli_options import GLOBAL_JOBS_DIR, GLOBAL_STATE_DIR, JOBS_DIR, STATE_DIR
from orchestrator.errors import (
    OrchestratorError,
    StoreError,
)


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
    "notify-test": "Send a test message to a job's notification URLs.",
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


def _environment_help() -> str:
    """The ``ORCH_*`` variables: the daemon's own, then each executor's (its registry)."""
    from orchestrator.executors.registry import ENVIRONMENT

    names = [
        "ORCH_JOBS_DIR", "ORCH_STATE_DIR", "ORCH_CONFIG", "ORCH_LOG_LEVEL", "ORCH_LOG_FORMAT",
        "ORCH_FORCE_POLLING", "ORCH_DEBOUNCE_S", "ORCH_SETTLE_S", "ORCH_RESCAN_INTERVAL_S",
        "ORCH_HEARTBEAT_S", "ORCH_DRAIN_GRACE_S", "ORCH_STATE_DIR_FORCE",
        "ORCH_METRICS_TEXTFILE", "ORCH_HTTP_ADDRESS", "ORCH_HTTP_TOKEN", "ORCH_NOTIFY_BACKOFF_S",
        "ORCH_DIA_KEEP_MEMORY",
    ]  # fmt: skip
    names += [n for group in ENVIRONMENT.values() for n in group]
    lines, line = [], ""
    for name in names:
        if len(line) + len(name) > 72:
            lines.append(line)
            line = ""
        line = f"{line} {name}".strip()
    lines.append(line)
    return "\b\nEnvironment (the README's Settings table says what each does):\n" + "\n".join(
        f"  {ln}" for ln in lines
    )


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=_environment_help(),
)
@click.version_option(__version__, prog_name="orchestrator")
@GLOBAL_JOBS_DIR
@GLOBAL_STATE_DIR
def main(jobs_dir: Path | None, state_dir: Path | None) -> None:
    """Run jobs from YAML manifests: scheduled, supervised, recorded.

    Where the jobs and the state are: --jobs-dir/--state-dir (before the command), else
    ORCH_JOBS_DIR/ORCH_STATE_DIR, else orchestrator.toml (./orchestrator.toml, then
    ~/.config/orchestrator/orchestrator.toml: jobs_dir, state_dir), else the defaults.

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


def _add_run_commands() -> None:
    from orchestrator import (
        cli_complete,
        cli_control,
        cli_inspect,
        cli_logs,
        cli_manifests,
        cli_notify,
        cli_runs,
        cli_usage,
    )

    for command in (
        cli_manifests.validate,
        cli_manifests.schema,
        cli_manifests.plan,
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
        cli_notify.notify_test,
        cli_usage.usage,
    ):
        main.add_command(command)


_add_run_commands()
