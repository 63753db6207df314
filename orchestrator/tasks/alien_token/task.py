"""One run of an AliEnToken job: check, renew when due, distribute, report.

Order of a run:

1. Read the token's notAfter from the certificate (never from alien-token-info's exit code).
2. Renew when ``force``, when there is no usable token, or when less than ``renew_before`` is
   left: run the init command (wrapper / container around it) and read the certificate again.
3. When the token in place is one clients accept (at least 600 s left), copy it to the target
   directories, write the env file, and copy it to every remote host that does not hold it yet
   (failed hosts from earlier runs included).
4. Report: a result (``valid_until`` = ``not_after``, ``seconds_left``, ``renewed``, ``hosts``,
   ``hosts_ok``, ``hosts_failed``, ``summary``, ...) and an exit status.

Exit status: 0 all done; 1 something failed (renewal, a copy, too few hosts); 2 the manifest
or the environment is unusable; 3 the token is inside ``alert_before`` or unusable, which is
reported as a warning on every run until a renewal succeeds.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.tasks.alien_token.certificate import (
    TokenState,
    expand_path,
    format_left,
    iso_utc,
    read_token,
)
from orchestrator.tasks.alien_token.distribute import (
    distribute_local,
    distribute_remote,
    skip_distribution,
)
from orchestrator.tasks.alien_token.local_copy import (
    TokenFiles,
)
from orchestrator.tasks.alien_token.renew import run_init
from orchestrator.tasks.alien_token.report import Console, Report
from orchestrator.tasks.alien_token.spec import (
    CLIENT_MIN_VALID_S,
    AliEnTokenManifest,
    AliEnTokenSpec,
)
from orchestrator.tasks.alien_token.state import (
    StateBusyError,
    locked,
    state_dir_for,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNUSABLE = 2
EXIT_ALERT = 3


def _renewal_reason(spec: AliEnTokenSpec, token: TokenState, now: datetime) -> str | None:
    if spec.force:
        return "force is set"
    if token.problem:
        return token.problem
    left = token.seconds_left(now)
    assert left is not None  # a token without a problem has a notAfter
    if left < spec.renew_before:
        return (
            f"{format_left(left)} left, less than renew_before ({format_left(spec.renew_before)})"
        )
    return None


def _describe(token: TokenState, now: datetime) -> str:
    if token.not_after is None:
        return token.problem or "no token"
    text = f"valid until {iso_utc(token.not_after)} ({format_left(token.seconds_left(now))} left)"
    if token.seconds_left(now) is not None and not token.accepted_by_clients(now):
        text += ", which clients refuse (they need at least 600 s)"
    if token.problem:
        text += f"; {token.problem}"
    return text


def _renew(
    spec: AliEnTokenSpec, token: TokenState, reason: str, report: Report, console: Console
) -> TokenState:
    console.say(f"renewing: {reason}; running {' '.join(spec.init_command)}")
    outcome = run_init(spec, dict(os.environ))
    for line in outcome.output_tail:
        console.say(f"  init| {line}")
    after = read_token(token.cert_path, token.key_path)
    if not outcome.ok:
        report.renewal_error = outcome.message
        report.needs_passphrase = outcome.needs_passphrase
    elif after.problem:
        report.renewal_error = f"the init command exited 0 but {after.problem}"
    elif after.fingerprint == token.fingerprint:
        report.renewal_error = (
            f"the init command exited 0 but left the same certificate at {after.cert_path}: "
            "check that it writes cert_path/key_path"
        )
    else:
        report.renewed = True
        console.say(f"renewed: {outcome.message}")
    return after


def run(
    manifest: AliEnTokenManifest,
    console: Console | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> tuple[int, dict[str, Any]]:
    """Do one run; returns the exit status and the task result. Two runs of one job never
    overlap: the second finds the lock held and fails without touching anything."""
    console = console or Console()
    job = os.environ.get("ORCH_JOB") or manifest.name
    state_dir = state_dir_for(job)
    if state_dir is None:
        if manifest.spec.targets.all_hosts():
            console.say("note: ORCH_STATE_DIR is not set; every host is copied to on this run")
        return _run(manifest.spec, job, None, console, now)
    try:
        with locked(state_dir):
            return _run(manifest.spec, job, state_dir, console, now)
    except (StateBusyError, OSError) as exc:
        report = Report()
        spec = manifest.spec
        report.token = read_token(expand_path(spec.cert_path), expand_path(spec.key_path))
        if isinstance(exc, StateBusyError):
            report.fail(
                f"another run of job {job} holds the lock {exc}",
                "; this run did nothing. It ends by itself; check `orchestrator status`",
            )
        else:
            report.fail(
                f"cannot lock the state directory {state_dir}: {exc}",
                "; this run did nothing. Check the directory's permissions and free space",
            )
        return _finish(spec, report, now(), console)


def _run(
    spec: AliEnTokenSpec,
    job: str,
    state_dir: Path | None,
    console: Console,
    now: Callable[[], datetime],
) -> tuple[int, dict[str, Any]]:
    report = Report()
    cert_path, key_path = expand_path(spec.cert_path), expand_path(spec.key_path)
    token = read_token(cert_path, key_path)
    console.say(f"token {cert_path}: {_describe(token, now())}")
    reason = _renewal_reason(spec, token, now())
    if reason:
        token = _renew(spec, token, reason, report, console)
        console.say(f"token {cert_path}: {_describe(token, now())}")
    report.token = token
    if token.accepted_by_clients(now()):
        files = TokenFiles(
            cert=token.cert_path.read_bytes(),
            key=token.key_path.read_bytes(),
            cert_name=token.cert_path.name,
            key_name=token.key_path.name,
        )
        distribute_local(spec, files, token, job, report, console)
        distribute_remote(spec, files, token, state_dir, now, report, console)
    elif spec.targets.directories or spec.targets.env_file or spec.targets.all_hosts():
        skip_distribution(spec, report)
        console.say("nothing copied: the token in place is not one clients accept")
    return _finish(spec, report, now(), console)


def _advice(report: Report) -> str:
    if report.needs_passphrase:
        return (
            "run alien-token-init by hand (it needs the grid key's passphrase), or give the job "
            "a grid key it can use unattended; the next run then distributes the new token"
        )
    return (
        "check the init command's output above (wrapper, image, JAliEn version, grid "
        "certificate), run it by hand to see it work, then trigger this job again"
    )


def _finish(
    spec: AliEnTokenSpec, report: Report, now: datetime, console: Console
) -> tuple[int, dict[str, Any]]:
    token = report.token
    assert token is not None
    left = token.seconds_left(now)
    usable = token.accepted_by_clients(now)
    left_text = (
        f"{format_left(left)} left (until {iso_utc(token.not_after)})"
        if token.not_after is not None and left is not None
        else "no usable token in place"
    )
    if report.renewal_error:
        report.fail(
            f"renewal failed: {report.renewal_error}",
            f". The token in place has {left_text}; " + _advice(report),
            first=True,
        )
    alert = not usable or left is None or left < spec.alert_window_s
    if alert:
        if usable and token.not_after is not None:
            report.warning = (
                f"the token expires in {format_left(left)} (at {iso_utc(token.not_after)}), "
                f"inside alert_before ({format_left(spec.alert_window_s)})"
            )
        else:
            report.warning = f"no token clients accept: {_describe(token, now)}"
    hosts_ok = sum(1 for r in report.hosts.values() if r["ok"])
    hosts_failed = len(report.hosts) - hosts_ok

    parts = [
        f"token valid until {iso_utc(token.not_after)} ({format_left(left)} left)"
        if usable and token.not_after is not None
        else "NO USABLE TOKEN"
    ]
    parts.append(
        "renewed" if report.renewed else "renewal FAILED" if report.renewal_error else "not renewed"
    )
    if report.hosts:
        parts.append(f"hosts {hosts_ok}/{len(report.hosts)} ok")
    if report.directories:
        dirs_ok = sum(1 for r in report.directories.values() if r["ok"])
        parts.append(f"directories {dirs_ok}/{len(report.directories)}")
    summary = ", ".join(parts)
    if alert:
        summary = "WARNING: " + summary
    if report.headlines:
        summary += f"; {report.headlines[0]}"

    # valid_until is what other jobs' `requires:` checks read (the daemon's generic contract,
    # orchestrator.daemon.admission): only a certificate with its own key counts (an expired
    # one is reported, and fails those checks by its date). not_after says the same for people.
    paired = token.problem is None and token.not_after is not None and left is not None
    expiry = iso_utc(token.not_after) if paired and token.not_after else None
    result: dict[str, Any] = {
        "valid_until": expiry,
        "not_after": expiry,
        "seconds_left": int(left) if paired and left is not None else None,
        "valid": usable,
        "renewed": report.renewed,
        "renewal_error": report.renewal_error,
        "needs_passphrase": report.needs_passphrase,
        "alert": alert,
        "warning": report.warning,
        "hosts": report.hosts,
        "hosts_ok": hosts_ok,
        "hosts_failed": hosts_failed,
        "hosts_required": report.hosts_required,
        "directories": report.directories,
        "env_file": report.env_file,
        "errors": report.failures,
        "summary": summary,
    }
    # The daemon merges results as RFC 7396 patches, where null deletes a key: leave unknown
    # values out rather than writing nulls that would vanish anyway.
    result = {k: v for k, v in result.items() if v is not None}

    console.say(f"summary: {summary}")
    for failure in report.failures:
        print(f"ERROR: {failure}", file=sys.stderr, flush=True)
    if report.warning:
        print(f"WARNING: {report.warning}", file=sys.stderr, flush=True)
    if alert:
        return EXIT_ALERT, result
    return (EXIT_FAILED if report.failures else EXIT_OK), result


__all__ = ["CLIENT_MIN_VALID_S", "EXIT_ALERT", "EXIT_FAILED", "EXIT_OK", "EXIT_UNUSABLE", "run"]
