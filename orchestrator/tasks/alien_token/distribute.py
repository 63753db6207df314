"""Where an AliEnToken run puts the token: target directories, the env file, remote hosts
(those that do not hold the current token yet), and the host state between runs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from orchestrator.tasks.alien_token.certificate import TokenState, expand_path, iso_utc
from orchestrator.tasks.alien_token.local_copy import (
    TokenFiles,
    atomic_write,
    copy_to_directory,
    env_file_text,
)
from orchestrator.tasks.alien_token.remote import HostResult, copy_to_hosts
from orchestrator.tasks.alien_token.report import Console, Report
from orchestrator.tasks.alien_token.spec import AliEnTokenSpec
from orchestrator.tasks.alien_token.state import HostState, load_hosts, save_hosts


def distribute_local(
    spec: AliEnTokenSpec,
    files: TokenFiles,
    token: TokenState,
    job: str,
    report: Report,
    console: Console,
) -> None:
    targets = spec.targets
    exported: tuple[Path, Path] = (token.cert_path, token.key_path)
    for i, text in enumerate(targets.directories):
        directory = expand_path(text)
        try:
            paths = copy_to_directory(directory, files)
        except OSError as exc:
            error = f"{exc.strerror or exc} ({exc.filename or directory})"
            report.directories[str(directory)] = {"ok": False, "error": error}
            report.fail(f"copy to {directory} failed: {error}")
            console.say(f"directory {directory}: FAILED: {error}")
            continue
        report.directories[str(directory)] = {"ok": True, "error": ""}
        console.say(f"directory {directory}: token in place (mode 0600)")
        if i == 0:
            exported = paths
    if targets.env_file:
        env_path = expand_path(targets.env_file)
        debug_file = (
            str(expand_path(targets.alienpy_debug_file))
            if targets.alienpy_debug_file
            else str(exported[0].parent / "alienpy_debug.log")
        )
        assert token.not_after is not None
        text = env_file_text(exported[0], exported[1], debug_file, job, iso_utc(token.not_after))
        try:
            env_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_write(env_path, text.encode())
        except OSError as exc:
            error = f"{exc.strerror or exc} ({exc.filename or env_path})"
            report.fail(f"writing the env file {env_path} failed: {error}")
            console.say(f"env file {env_path}: FAILED: {error}")
        else:
            report.env_file = str(env_path)
            console.say(f"env file {env_path}: JALIEN_TOKEN_CERT={exported[0]}")


def distribute_remote(
    spec: AliEnTokenSpec,
    files: TokenFiles,
    token: TokenState,
    state_dir: Path | None,
    now: Callable[[], datetime],
    report: Report,
    console: Console,
) -> None:
    targets = spec.targets
    hosts = targets.all_hosts()
    if not hosts:
        return
    report.hosts_required = targets.min_hosts if targets.min_hosts is not None else len(hosts)
    known = load_hosts(state_dir)
    start = now()
    due = [
        h
        for h in hosts
        if known.setdefault(h, HostState()).due(token.fingerprint, start, targets.recopy_after)
    ]
    for host in hosts:
        if host not in due:
            report.hosts[host] = {"ok": True, "error": "", "action": "up to date"}
    console.say(
        f"hosts: {len(due)} of {len(hosts)} to copy to"
        + (f" ({len(hosts) - len(due)} up to date)" if len(due) < len(hosts) else "")
    )
    counts = {"done": 0, "failed": 0}

    def on_done(result: HostResult) -> None:
        counts["done"] += 1
        entry = known[result.host]
        entry.attempted_at = iso_utc(now())
        if result.ok:
            entry.ok, entry.error, entry.failures = True, "", 0
            entry.fingerprint, entry.copied_at = token.fingerprint, entry.attempted_at
            report.hosts[result.host] = {"ok": True, "error": "", "action": "copied"}
        else:
            counts["failed"] += 1
            entry.ok, entry.error = False, result.error
            entry.failures += 1
            report.hosts[result.host] = {
                "ok": False,
                "error": result.error,
                "action": "failed",
                "failures_in_a_row": entry.failures,
            }
        if console.tty:
            console.progress(
                f"hosts: {counts['done']}/{len(due)} done, {counts['failed']} failed"
                f" (last: {result.host} {'ok' if result.ok else 'FAILED'})"
            )
        else:
            console.say(
                f"host {result.host}: "
                + (f"copied ({result.seconds:.1f} s)" if result.ok else f"FAILED: {result.error}")
            )

    if due:
        files_by_host = copy_to_hosts(targets, due, files, on_done)
        if console.tty:
            for result in files_by_host.values():
                if not result.ok:
                    console.say(f"host {result.host}: FAILED: {result.error}")
    _record_hosts(state_dir, {h: known[h] for h in hosts}, report)


def _record_hosts(state_dir: Path | None, known: dict[str, HostState], report: Report) -> None:
    """Save what each host holds, and fail the run when too few hold the current token."""
    hosts = list(known)
    try:
        save_hosts(state_dir, known)
    except OSError as exc:
        report.fail(
            f"cannot save the host state in {state_dir}: {exc.strerror or exc}",
            "; the next run copies to every host again. Check the state directory's "
            "permissions and free space",
        )
    report.hosts = {h: report.hosts[h] for h in hosts}
    ok = sum(1 for r in report.hosts.values() if r["ok"])
    if ok < report.hosts_required:
        failed = [f"{h}: {r['error']}" for h, r in report.hosts.items() if not r["ok"]]
        shown = "; ".join(failed[:5]) + (f"; and {len(failed) - 5} more" if len(failed) > 5 else "")
        report.fail(
            f"only {ok} of {len(hosts)} hosts hold the current token "
            f"(min_hosts {report.hosts_required})",
            f": {shown}. Failed hosts are retried on the next run; check them with "
            f"ssh -o BatchMode=yes HOST true",
        )


def skip_distribution(spec: AliEnTokenSpec, report: Report) -> None:
    for host in spec.targets.all_hosts():
        report.hosts[host] = {"ok": False, "error": "no usable token to copy", "action": "skipped"}
    report.hosts_required = (
        spec.targets.min_hosts if spec.targets.min_hosts is not None else len(report.hosts)
    )
