"""``orchestrator logs``: a run's output, by run id or by job (its latest run), the last lines
only (``--tail``), and following it as it grows until the run ends (``-f``)."""

from __future__ import annotations

import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import click

from orchestrator.cli_common import fail, settings_from
from orchestrator.cli_complete import complete_runs_or_jobs
from orchestrator.cli_options import JOBS_DIR, STATE_DIR

FOLLOW_POLL_S = 0.3
CHUNK = 65536


@click.command()
@click.argument("target", metavar="RUN_ID|JOB", shell_complete=complete_runs_or_jobs)
@click.option(
    "-f", "--follow", is_flag=True, help="Print new output as it comes, until the run ends."
)
@click.option("--tail", "tail", type=click.IntRange(min=0), default=None, metavar="N",
              help="Only the last N lines (of each task's file for an array run).")  # fmt: skip
@JOBS_DIR
@STATE_DIR
def logs(
    target: str, follow: bool, tail: int | None, jobs_dir: Path | None, state_dir: Path | None
) -> None:
    """Print a run's output: RUN_ID, or JOB for its latest run.

    Example: orchestrator logs o2physics-nightly --tail 50 -f
    """
    from orchestrator.store.sqlite import SQLiteStore

    settings = settings_from(jobs_dir, state_dir)
    if not settings.db_path.exists():
        fail(f"no run history in {settings.state_dir}")
    store = SQLiteStore(settings.db_path)
    try:
        run = store.get_run(target) or next(iter(store.history(target, limit=1)), None)
        if run is None:
            fail(f"no run with id {target!r}, and no job {target!r} has run")
        paths = log_files(run.log_path)
        if not paths and not (follow and not run.is_terminal):
            fail(f"run {run.run_id} has no log file (state {run.state})")
        offsets = {p: _print_start(p, tail, len(paths) > 1) for p in paths}
        if follow:
            _follow(store, run, offsets)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        store.close()


def _print_start(path: Path, tail: int | None, header: bool) -> int:
    """Print the file (or its last ``tail`` lines); returns the offset printed up to."""
    if header:
        sys.stdout.write(f"==> {path.name} <==\n")
        sys.stdout.flush()
    with open(path, "rb") as fh:
        if tail is None:
            while chunk := fh.read(CHUNK):
                sys.stdout.buffer.write(chunk)
        else:
            kept: deque[bytes] = deque(fh, maxlen=tail) if tail else deque()
            sys.stdout.buffer.writelines(kept)
        end = fh.tell()
    sys.stdout.buffer.flush()
    return end


def _follow(store: Any, run: Any, offsets: dict[Path, int]) -> None:
    """New output of each file (and of task files that appear) until the run has ended and
    nothing more was written."""
    while True:
        ended = run.is_terminal
        for path in log_files(run.log_path):
            start = offsets.get(path, 0)
            try:
                with open(path, "rb") as fh:
                    fh.seek(start)
                    data = fh.read()
            except OSError:
                continue
            if data:
                if len(offsets) > 1 or path not in offsets:
                    sys.stdout.write(f"==> {path.name} <==\n")
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            offsets[path] = start + len(data)
        if ended:
            return
        time.sleep(FOLLOW_POLL_S)
        run = store.get_run(run.run_id) or run


def log_files(log_path: str | None) -> list[Path]:
    """A run's output files: one, or one per task for an array run (``output-%a.log``)."""
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
