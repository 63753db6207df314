"""``orchestrator notify-test [JOB]``: send one test message to the URLs a job (or the
daemon-wide default) notifies, now, and say for each whether it arrived: the way to check a
URL before a failure at 03:00 does."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import click

from orchestrator.cli_common import fail, settings_from
from orchestrator.cli_complete import complete_jobs
from orchestrator.cli_options import JOBS_DIR, STATE_DIR


@click.command("notify-test")
@click.argument("job", required=False, shell_complete=complete_jobs)
@JOBS_DIR
@STATE_DIR
def notify_test(job: str | None, jobs_dir: Path | None, state_dir: Path | None) -> None:
    """Send a test message to JOB's notification URLs (default: orchestrator.toml's), now.

    Each URL is shown by scheme and host with what became of it; exit 1 when one failed.
    ${VAR} in a URL is read from this shell's environment (the daemon reads its own).

    Example: SMTP_PASSWORD=... orchestrator notify-test o2physics-nightly
    """
    from orchestrator.config import ConfigError, config_path, load
    from orchestrator.notify.deliver import apprise_send
    from orchestrator.notify.model import effective, redact

    settings = settings_from(jobs_dir, state_dir)
    try:
        daemon_default = load(config_path(settings.jobs_dir)).notify
    except ConfigError as exc:
        fail(str(exc))
    own = None
    if job is not None:
        from orchestrator.cli_inspect import _loaded

        own = getattr(_loaded(settings, job).manifest, "notify", None)
    chosen = effective(own, daemon_default)
    if not chosen.urls:
        fail(f"no notification URLs for {job or 'the daemon-wide default'} (notify.urls)")
    title = f"[orchestrator] TEST: {job or 'default'} on {socket.gethostname()}"
    body = (
        "A test message from `orchestrator notify-test`; this job's messages go here on: "
        + ", ".join(chosen.on)
        + ".\n"
    )
    failed = 0
    for url in chosen.urls:
        attempt = apprise_send(url, title, body)
        if attempt.error is None:
            click.echo(f"sent      {redact(url)}")
        else:
            failed += 1
            click.echo(f"FAILED    {attempt.error}")
    sys.exit(1 if failed else 0)
