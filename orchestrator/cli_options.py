"""The options every command takes, shared by the main command line and the kinds' groups."""

from __future__ import annotations

from pathlib import Path

import click

JOBS_HELP = (
    "Directory of manifests [env ORCH_JOBS_DIR; orchestrator.toml's jobs_dir; default "
    "~/.config/orchestrator/jobs.d]."
)
STATE_HELP = (
    "Run history, logs, lease [env ORCH_STATE_DIR; orchestrator.toml's state_dir; default "
    "$XDG_STATE_HOME/orchestrator]."
)
# Global: `orchestrator --state-dir X status`. Each command still takes them after its name
# (scripts written before they were global), hidden from its help.
GLOBAL_JOBS_DIR = click.option(
    "--jobs-dir", type=click.Path(file_okay=False, path_type=Path), help=JOBS_HELP
)
GLOBAL_STATE_DIR = click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path), help=STATE_HELP
)
JOBS_DIR = click.option(
    "--jobs-dir", type=click.Path(file_okay=False, path_type=Path), hidden=True, help=JOBS_HELP
)
STATE_DIR = click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path), hidden=True, help=STATE_HELP
)
