"""The commands that ask the running daemon to act: ``trigger`` (and ``--wait`` for the run's
end), ``cancel``, ``reload``."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from orchestrator.cli_common import fail, settings_from
from orchestrator.cli_complete import complete_jobs, complete_runs
from orchestrator.cli_options import JOBS_DIR, STATE_DIR
from orchestrator.errors import ControlError, DaemonNotRunningError
from orchestrator.settings import Settings

WAIT_POLL_S = 0.5
_SAID_ALREADY = ("exit code", "killed by signal")  # messages the code line already says


def shell_code(state: str, exit_code: int | None) -> int:
    """What ``trigger --wait`` exits with: the run's own code as a shell shows it (128 + N for
    signal N), 0 for a success, 1 for an end without a code (lost, timed out before one)."""
    if state == "succeeded":
        return 0
    if exit_code is None or exit_code == 0:
        return 1
    return 128 - exit_code if exit_code < 0 else exit_code


@click.command()
@click.argument("job", shell_complete=complete_jobs)
@click.option(
    "--wait", is_flag=True, help="Wait for the run's end; exit with its code as a shell shows it."
)
@JOBS_DIR
@STATE_DIR
def trigger(job: str, wait: bool, jobs_dir: Path | None, state_dir: Path | None) -> None:
    """Run JOB now, through the running daemon; prints the run id.

    Example: orchestrator trigger o2physics-nightly --wait && echo built
    """
    settings = settings_from(jobs_dir, state_dir)
    reply = _control(settings, {"op": "trigger", "job": job}, "run_id")
    run_id = reply.get("run_id") if reply else None
    if not wait or not run_id:
        if wait:  # deferred: it has no run yet to wait for
            sys.exit(75)  # EX_TEMPFAIL
        return
    run = _wait(settings, str(run_id))
    code = shell_code(run.state, run.exit_code)
    shown = f"exit code {code}" + _signal_name(run.exit_code)
    said = run.message if run.message and not run.message.startswith(_SAID_ALREADY) else None
    click.echo(f"{run.run_id} {run.state} ({shown})" + (f": {said}" if said else ""))
    sys.exit(code)


def _signal_name(exit_code: int | None) -> str:
    if exit_code is None or exit_code >= 0:
        return ""
    try:
        return f", {signal.Signals(-exit_code).name}"
    except ValueError:
        return ""


def _wait(settings: Settings, run_id: str) -> Any:
    """The run's record once it ended (read from the store; Ctrl-C stops waiting, not the run)."""
    from orchestrator.store.sqlite import SQLiteStore

    store = SQLiteStore(settings.db_path)
    try:
        while True:
            run = store.get_run(run_id)
            if run is not None and run.is_terminal:
                return run
            time.sleep(WAIT_POLL_S)
    except KeyboardInterrupt:
        click.echo(f"stopped waiting; run {run_id} goes on", err=True)
        sys.exit(130)
    finally:
        store.close()


@click.command()
@click.argument("run_id", shell_complete=complete_runs)
@JOBS_DIR
@STATE_DIR
def cancel(run_id: str, jobs_dir: Path | None, state_dir: Path | None) -> None:
    """Cancel an active run (its whole process group: TERM, grace, KILL), or drop the pending
    retry of a failed run (RUN_ID is the failed run; `status` lists pending retries).

    Example: orchestrator cancel 20261130T020000Z-3f2a1b
    """
    _control(settings_from(jobs_dir, state_dir), {"op": "cancel", "run_id": run_id}, "run_id")


@click.command()
@click.argument("job", shell_complete=complete_jobs)
@JOBS_DIR
@STATE_DIR
def suspend(job: str, jobs_dir: Path | None, state_dir: Path | None) -> None:
    """Suspend JOB now, without editing its manifest: no scheduled run, retry or `after` run
    starts until `resume` (a run under way goes on; `trigger` still runs it by hand). Kept over
    restarts of the daemon; `status` shows it.

    Example: orchestrator suspend o2physics-nightly
    """
    reply = _control(settings_from(jobs_dir, state_dir), {"op": "suspend", "job": job}, None)
    click.echo(f"{job}: suspended" if reply.get("changed") else f"{job}: already suspended")


@click.command()
@click.argument("job", shell_complete=complete_jobs)
@JOBS_DIR
@STATE_DIR
def resume(job: str, jobs_dir: Path | None, state_dir: Path | None) -> None:
    """Resume JOB after `suspend` (its schedule counts from now: nothing missed is replayed).

    Example: orchestrator resume o2physics-nightly
    """
    reply = _control(settings_from(jobs_dir, state_dir), {"op": "resume", "job": job}, None)
    click.echo(f"{job}: resumed" if reply.get("changed") else f"{job}: was not suspended")


@click.command()
@JOBS_DIR
@STATE_DIR
def reload(jobs_dir: Path | None, state_dir: Path | None) -> None:
    """Re-read the jobs directory now (the same as SIGHUP).

    Example: orchestrator reload && orchestrator status
    """
    settings = settings_from(jobs_dir, state_dir)
    _control(settings, {"op": "reload"}, None)
    click.echo(f"reloaded {settings.jobs_dir}: see `orchestrator status` for what is in effect")


def _control(settings: Settings, payload: dict[str, Any], key: str | None) -> dict[str, Any]:
    from orchestrator.control import request

    try:
        reply = request(settings.control_socket, payload)
    except (DaemonNotRunningError, ControlError) as exc:
        fail(str(exc))
    if reply.get("deferred"):
        click.echo(f"deferred: {reply['deferred']}", err=True)
        return {}
    if reply.get("retry_dropped"):
        dropped = reply["retry_dropped"]
        click.echo(
            f"dropped the pending retry (attempt {dropped['attempt']}) of job "
            f"{dropped['job']!r} after run {reply['run_id']}"
        )
        return dict(reply)
    if key:
        click.echo(reply[key])
    return dict(reply)
