"""The options every command takes, shared by the main command line and the kinds' groups."""

from __future__ import annotations

from pathlib import Path

import click

JOBS_DIR = click.option(
    "--jobs-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="ORCH_JOBS_DIR",
    help="Directory of manifests [env ORCH_JOBS_DIR; default ~/.config/orchestrator/jobs.d].",
)
STATE_DIR = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="ORCH_STATE_DIR",
    help="Run history, logs, lease [env ORCH_STATE_DIR; default $XDG_STATE_HOME/orchestrator].",
)
