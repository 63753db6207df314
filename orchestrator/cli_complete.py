"""Shell completion: job names and run ids for the commands that take them, and the
``completion`` command that prints the script for a shell (click's own completion).

    eval "$(orchestrator completion bash)"     # in ~/.bashrc
    orchestrator completion zsh > ~/.zfunc/_orchestrator
    orchestrator completion fish > ~/.config/fish/completions/orchestrator.fish
"""

from __future__ import annotations

import re
from typing import Any

import click
from click.shell_completion import CompletionItem

_NAME = re.compile(r"^name:\s*['\"]?([a-z0-9][-a-z0-9]*)", re.MULTILINE)


def _settings(ctx: click.Context) -> Any:
    from orchestrator.settings import Settings

    root = ctx.find_root().params
    try:
        return Settings.resolve(
            ctx.params.get("jobs_dir") or root.get("jobs_dir"),
            ctx.params.get("state_dir") or root.get("state_dir"),
        )
    except Exception:
        return None


def job_names(ctx: click.Context) -> list[str]:
    """The names the manifests in the jobs directory give (read quickly, not validated)."""
    settings = _settings(ctx)
    if settings is None or not settings.jobs_dir.is_dir():
        return []
    names = set()
    for path in settings.jobs_dir.glob("*.y*ml"):
        try:
            head = path.read_text(errors="replace")[:65536]
        except OSError:
            continue
        match = _NAME.search(head)
        names.add(match.group(1) if match else path.stem)
    return sorted(names)


def run_ids(ctx: click.Context, limit: int = 50) -> list[str]:
    """The newest run ids in the run store."""
    settings = _settings(ctx)
    if settings is None or not settings.db_path.exists():
        return []
    try:
        from orchestrator.store.sqlite import SQLiteStore

        store = SQLiteStore(settings.db_path)
        try:
            return [r.run_id for r in store.history(None, limit=limit)]
        finally:
            store.close()
    except Exception:
        return []


def complete_jobs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    return [CompletionItem(n) for n in job_names(ctx) if n.startswith(incomplete)]


def complete_runs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    return [CompletionItem(r) for r in run_ids(ctx) if r.startswith(incomplete)]


def complete_runs_or_jobs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    return complete_jobs(ctx, param, incomplete) + complete_runs(ctx, param, incomplete)


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script (job names and run ids complete too).

    Example, in ~/.bashrc: eval "$(orchestrator completion bash)"
    """
    from click.shell_completion import get_completion_class

    from orchestrator.cli import main

    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(main, {}, "orchestrator", "_ORCHESTRATOR_COMPLETE").source())
