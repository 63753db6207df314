"""Copies to remote hosts over ssh, against a real sshd on loopback (see conftest.sshd):
per-host results, partial failure, min_hosts, retries of failed hosts on the next run,
re-copies after a renewal, and the progress line on a TTY.

alien-token-init is the stand-in (bin/fake-alien-token-init): the CERN token service cannot be
reached from the test machines.
"""

from __future__ import annotations

import json
import os
import pty
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.alien_token.conftest import (
    DOWN_HOST,
    GOOD_HOSTS,
    LoopbackSshd,
    init_command,
    manifest_dict,
    run_task,
)
from tests.alien_token.tokens import make_token

ALL_HOSTS = [*GOOD_HOSTS, DOWN_HOST]


def _spec(tmp_path: Path, ssh_config: Path, **targets: Any) -> dict[str, Any]:
    cert, key = tmp_path / "tmp" / "tokencert_7.pem", tmp_path / "tmp" / "tokenkey_7.pem"
    return {
        "cert_path": str(cert),
        "key_path": str(key),
        "renew_before": "1d",
        "alert_before": "12h",
        "init_command": init_command(cert, key),
        "targets": {
            "ssh_config": str(ssh_config),
            "remote_dir": str(tmp_path / "remote"),
            "connect_timeout": "5s",
            "host_timeout": "20s",
            "parallelism": 4,
            **targets,
        },
    }


def _token(tmp_path: Path, lifetime_s: float = 40 * 3600) -> tuple[Path, Path]:
    cert, key = tmp_path / "tmp" / "tokencert_7.pem", tmp_path / "tmp" / "tokenkey_7.pem"
    make_token(cert, key, lifetime_s)
    return cert, key


def test_partial_failure_reports_each_host(tmp_path: Path, sshd: LoopbackSshd) -> None:
    """Hosts that answer get the token (0600, same bytes); the one that is down is reported
    with ssh's reason; min_hosts decides the run's outcome."""
    cert, key = _token(tmp_path)
    config = sshd.write_config(tmp_path / "ssh_config")
    run = run_task(tmp_path, _spec(tmp_path, config, hosts=ALL_HOSTS, min_hosts=3))
    assert run.returncode == 0, run.stdout + run.stderr
    r = run.result
    assert r["hosts_ok"] == 3
    assert r["hosts_failed"] == 1
    for host in GOOD_HOSTS:
        assert r["hosts"][host] == {"ok": True, "error": "", "action": "copied"}
    down = r["hosts"][DOWN_HOST]
    assert down["ok"] is False
    assert "Connection refused" in down["error"]
    remote = tmp_path / "remote"
    assert (remote / cert.name).read_bytes() == cert.read_bytes()
    assert (remote / key.name).read_bytes() == key.read_bytes()
    assert stat.S_IMODE((remote / key.name).stat().st_mode) == 0o600
    assert stat.S_IMODE((remote / cert.name).stat().st_mode) == 0o600
    assert sorted(p.name for p in remote.iterdir()) == sorted([cert.name, key.name])
    assert f"host {DOWN_HOST}: FAILED" in run.stdout
    assert key.read_text().splitlines()[1] not in run.stdout + run.stderr


def test_too_few_hosts_fails_the_run(tmp_path: Path, sshd: LoopbackSshd) -> None:
    """With min_hosts left at its default (all hosts), one host down fails the run and the
    message names the host and its error."""
    _token(tmp_path)
    config = sshd.write_config(tmp_path / "ssh_config")
    run = run_task(tmp_path, _spec(tmp_path, config, hosts=ALL_HOSTS))
    assert run.returncode == 1
    assert "only 3 of 4 hosts hold the current token (min_hosts 4)" in run.result["summary"]
    assert f"{DOWN_HOST}: ssh failed" in run.stderr
    assert "retried on the next run" in run.stderr


def test_failed_hosts_are_retried_on_the_next_run(tmp_path: Path, sshd: LoopbackSshd) -> None:
    """The next run copies only to the host that failed (the others already hold this token);
    after a renewal every host gets the new token."""
    cert, _ = _token(tmp_path)
    config = sshd.write_config(tmp_path / "ssh_config")
    first = run_task(tmp_path, _spec(tmp_path, config, hosts=ALL_HOSTS, min_hosts=1))
    assert first.result["hosts"][DOWN_HOST]["ok"] is False
    state = json.loads((tmp_path / "state" / "alien_token" / "token" / "hosts.json").read_text())
    assert state["hosts"][DOWN_HOST]["failures"] == 1

    sshd.write_config(config, down=[])  # the host is back
    second = run_task(tmp_path, _spec(tmp_path, config, hosts=ALL_HOSTS, min_hosts=1))
    assert second.returncode == 0, second.stderr
    actions = {h: v["action"] for h, v in second.result["hosts"].items()}
    assert actions == {**dict.fromkeys(GOOD_HOSTS, "up to date"), DOWN_HOST: "copied"}
    assert second.result["hosts_ok"] == 4
    assert second.result["hosts_failed"] == 0

    third = run_task(
        tmp_path, {**_spec(tmp_path, config, hosts=ALL_HOSTS, min_hosts=1), "force": True}
    )
    assert third.returncode == 0
    assert third.result["renewed"] is True
    assert {v["action"] for v in third.result["hosts"].values()} == {"copied"}
    assert (tmp_path / "remote" / cert.name).read_bytes() == cert.read_bytes()


def test_host_pattern_and_recopy_after(tmp_path: Path, sshd: LoopbackSshd) -> None:
    """A brace pattern names the hosts; recopy_after 0 copies to each of them on every run."""
    _token(tmp_path)
    config = sshd.write_config(tmp_path / "ssh_config")
    spec = _spec(tmp_path, config, host_pattern="login{01..03}", recopy_after=0, jitter="50ms")
    for _ in range(2):
        run = run_task(tmp_path, spec)
        assert run.returncode == 0, run.stderr
        assert list(run.result["hosts"]) == GOOD_HOSTS
        assert {v["action"] for v in run.result["hosts"].values()} == {"copied"}


def test_remote_home_directory(tmp_path: Path, sshd: LoopbackSshd) -> None:
    """remote_dir '~/...' is the remote user's home (here the same machine and user)."""
    _token(tmp_path)
    config = sshd.write_config(tmp_path / "ssh_config")
    sub = f".orch-test-tokens-{os.getpid()}-{tmp_path.name}"
    spec = _spec(tmp_path, config, hosts=["login01"])
    spec["targets"]["remote_dir"] = f"~/{sub}"
    target = Path.home() / sub
    try:
        run = run_task(tmp_path, spec)
        assert run.returncode == 0, run.stderr
        assert stat.S_IMODE(target.stat().st_mode) == 0o700
        assert (target / "tokencert_7.pem").exists()
    finally:
        for child in target.glob("*"):
            child.unlink()
        if target.exists():
            target.rmdir()


def test_progress_line_on_a_tty(tmp_path: Path, sshd: LoopbackSshd) -> None:
    """From a terminal, host progress is one rewritten line ('hosts: n/m done')."""
    _token(tmp_path)
    config = sshd.write_config(tmp_path / "ssh_config")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    manifest = manifest_dict("tok", _spec(tmp_path, config, hosts=ALL_HOSTS, min_hosts=1))
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    env = dict(
        os.environ,
        ORCH_TASK_MANIFEST=str(run_dir / "manifest.json"),
        ORCH_STATE_DIR=str(tmp_path / "state"),
    )
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.tasks.alien_token"],
        stdout=terminal,
        stderr=terminal,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    os.close(terminal)
    chunks = []
    while True:
        try:
            data = os.read(controller, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(controller)
    assert proc.wait(30) == 0
    text = b"".join(chunks).decode()
    assert "\rhosts: 4/4 done, 1 failed" in text.replace("\x1b[K", "")
    assert f"host {DOWN_HOST}: FAILED" in text
