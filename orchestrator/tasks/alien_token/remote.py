"""Copies of the token on other hosts, over ssh, with a result per host.

One ssh connection per host: the certificate and key travel on stdin as a small tar stream;
the remote side (POSIX sh, started explicitly so that a tcsh login shell does not matter)
unpacks them into a private staging directory inside the target directory, then renames
each into place (same file system, so each rename is atomic) with mode 0600. ssh runs with
``BatchMode=yes`` (a host that wants a password fails at once instead of waiting) and a
connect timeout; the whole copy is bounded by ``host_timeout``.
"""

from __future__ import annotations

import io
import random
import shlex
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from orchestrator.tasks.alien_token.certificate import expand_path
from orchestrator.tasks.alien_token.local_copy import TokenFiles
from orchestrator.tasks.alien_token.spec import Targets

_STAGED_CERT = "c"
_STAGED_KEY = "k"


@dataclass(frozen=True)
class HostResult:
    host: str
    ok: bool
    error: str  # "" when ok; ssh's own last line otherwise (never token contents)
    seconds: float


def _tar_stream(token: TokenFiles) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in ((_STAGED_CERT, token.cert), (_STAGED_KEY, token.key)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _remote_dir_expr(remote_dir: str) -> str:
    """The directory as a sh word: ``~/x`` becomes ``"$HOME"/x``, the rest is quoted."""
    if remote_dir == "~":
        return '"$HOME"'
    if remote_dir.startswith("~/"):
        return '"$HOME"/' + shlex.quote(remote_dir[2:])
    return shlex.quote(remote_dir)


def remote_script(remote_dir: str, token: TokenFiles) -> str:
    """The one-line sh program the remote side runs (one line: csh cannot quote newlines)."""
    d = _remote_dir_expr(remote_dir)
    return "; ".join(
        [
            "set -eu",
            "umask 077",
            f"d={d}",
            'mkdir -p "$d"',
            's=$(mktemp -d "$d/.orch-token.XXXXXX")',
            "trap 'rm -rf \"$s\"' EXIT",
            'tar -x -o -f - -C "$s"',
            f'chmod 600 "$s/{_STAGED_CERT}" "$s/{_STAGED_KEY}"',
            f'mv -f "$s/{_STAGED_KEY}" "$d"/{shlex.quote(token.key_name)}',
            f'mv -f "$s/{_STAGED_CERT}" "$d"/{shlex.quote(token.cert_name)}',
        ]
    )


def ssh_argv(targets: Targets, host: str, token: TokenFiles) -> list[str]:
    argv = ["ssh"]
    if targets.ssh_config:
        argv += ["-F", str(expand_path(targets.ssh_config))]
    argv += [
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={max(1, round(targets.connect_timeout))}",
        *targets.ssh_options,
        "--",
        host,
        "sh -c " + shlex.quote(remote_script(targets.remote_dir, token)),
    ]
    return argv


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def copy_to_host(targets: Targets, host: str, token: TokenFiles) -> HostResult:
    """Copy the token to one host; never raises for the host's own failures."""
    start = time.monotonic()
    argv = ssh_argv(targets, host, token)
    try:
        proc = subprocess.run(
            argv,
            input=_tar_stream(token),
            capture_output=True,
            timeout=targets.host_timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return HostResult(
            host,
            False,
            f"no answer within host_timeout ({targets.host_timeout:g} s)",
            time.monotonic() - start,
        )
    except OSError as exc:
        return HostResult(host, False, f"cannot run ssh: {exc.strerror}", 0.0)
    elapsed = time.monotonic() - start
    if proc.returncode == 0:
        return HostResult(host, True, "", elapsed)
    why = _last_line(proc.stderr.decode(errors="replace")) or "no message"
    if proc.returncode == 255:
        error = f"ssh failed: {why}"
    else:
        error = f"copy failed on the host (exit {proc.returncode}): {why}"
    return HostResult(host, False, error, elapsed)


def copy_to_hosts(
    targets: Targets,
    hosts: list[str],
    token: TokenFiles,
    on_done: Callable[[HostResult], None],
    rng: random.Random | None = None,
) -> dict[str, HostResult]:
    """Copy to ``hosts``, ``parallelism`` at a time, each after a random delay up to
    ``jitter``; ``on_done`` is called (serialised) as each host finishes."""
    rng = rng or random.Random()
    delays = {host: rng.uniform(0, targets.jitter) if targets.jitter else 0.0 for host in hosts}
    lock = threading.Lock()
    results: dict[str, HostResult] = {}

    def one(host: str) -> None:
        if delays[host]:
            time.sleep(delays[host])
        result = copy_to_host(targets, host, token)
        with lock:
            results[host] = result
            on_done(result)

    with ThreadPoolExecutor(max_workers=targets.parallelism) as pool:
        for future in [pool.submit(one, host) for host in hosts]:
            future.result()
    return {host: results[host] for host in hosts}
