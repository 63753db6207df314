"""AliEnToken end to end: a real daemon runs the job (trigger), the task renews the token with
the stand-in alien-token-init (the CERN token service cannot be reached from here), copies it
to a directory, an env file and hosts of a real loopback sshd, and the result fields reach
``history --json`` and ``status --json``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.alien_token.conftest import DOWN_HOST, GOOD_HOSTS, LoopbackSshd, init_command
from tests.alien_token.tokens import make_token, not_after_of
from tests.conftest import DaemonHarness, wait_for

pytestmark = pytest.mark.daemon

TERMINAL = {"succeeded", "failed", "timed_out", "cancelled", "lost"}


def _manifest(tmp: Path, ssh_config: Path, init: list[str]) -> str:
    spec = {
        "cert_path": str(tmp / "tokencert.pem"),
        "key_path": str(tmp / "tokenkey.pem"),
        "renew_before": "1d",
        "alert_before": "6h",
        "init_command": init,
        "init_timeout": "30s",
        "targets": {
            "directories": [str(tmp / "home-tokens")],
            "env_file": str(tmp / "home-tokens" / "alien-token.env"),
            "hosts": [*GOOD_HOSTS, DOWN_HOST],
            "ssh_config": str(ssh_config),
            "remote_dir": str(tmp / "remote"),
            "connect_timeout": "5s",
            "min_hosts": 2,
        },
    }
    # JSON is YAML: the manifest file is written as the daemon will read it.
    doc = {
        "apiVersion": "orchestrator/v1",
        "kind": "AliEnToken",
        "name": "alien-token",
        "policy": {"timeout": "2m"},
        "spec": spec,
    }
    return json.dumps(doc, indent=2) + "\n"


def _run_once(daemon: DaemonHarness) -> dict[str, object]:
    run_id = daemon.cli("trigger", "alien-token").stdout.strip()
    return dict(
        wait_for(
            lambda: next(
                (
                    r
                    for r in daemon.history("alien-token")
                    if r["run_id"] == run_id and r["state"] in TERMINAL
                ),
                None,
            ),
            45,
            0.2,
        )
    )


def test_daemon_runs_the_job_and_records_the_result(
    daemon: DaemonHarness, sshd: LoopbackSshd, tmp_path: Path
) -> None:
    """A triggered AliEnToken run renews a short token, distributes it (one host down, within
    min_hosts) and its result fields appear in history and status."""
    tmp = tmp_path / "token"
    tmp.mkdir()
    make_token(tmp / "tokencert.pem", tmp / "tokenkey.pem", 2 * 3600)
    config = sshd.write_config(tmp / "ssh_config")
    init = init_command(tmp / "tokencert.pem", tmp / "tokenkey.pem", lifetime_s=2 * 86400)
    daemon.write("alien-token.yaml", _manifest(tmp, config, init))
    daemon.start()
    wait_for(lambda: daemon.job_status("alien-token")["valid"], 10)

    run = _run_once(daemon)
    assert run["state"] == "succeeded", daemon.cli("logs", str(run["run_id"]), check=False).stdout
    result = run["result"]
    assert isinstance(result, dict)
    assert result["renewed"] is True
    assert result["not_after"] == not_after_of(tmp / "tokencert.pem").strftime("%Y-%m-%dT%H:%M:%SZ")
    assert result["seconds_left"] > 47 * 3600
    assert result["hosts_ok"] == 3
    assert result["hosts_failed"] == 1
    assert result["hosts"][DOWN_HOST]["ok"] is False
    assert "Connection refused" in result["hosts"][DOWN_HOST]["error"]
    assert all(
        result["hosts"][h] == {"ok": True, "error": "", "action": "copied"} for h in GOOD_HOSTS
    )
    assert "renewed" in str(result["summary"])
    assert "hosts 3/4 ok" in str(result["summary"])
    assert (tmp / "home-tokens" / "tokenkey.pem").read_bytes() == (
        tmp / "tokenkey.pem"
    ).read_bytes()
    assert (tmp / "remote" / "tokencert.pem").read_bytes() == (tmp / "tokencert.pem").read_bytes()

    # The next run only retries the host that failed, and still is a success.
    second = _run_once(daemon)
    assert second["state"] == "succeeded"
    second_result = second["result"]
    assert isinstance(second_result, dict)
    assert second_result["renewed"] is False
    assert second_result["hosts"][GOOD_HOSTS[0]]["action"] == "up to date"
    assert second_result["hosts"][DOWN_HOST]["action"] == "failed"
    assert second_result["hosts"][DOWN_HOST]["failures_in_a_row"] == 2

    last = daemon.job_status("alien-token")["last_run"]
    assert last["run_id"] == second["run_id"]
    assert last["state"] == "succeeded"
    assert last["result"]["not_after"] == second_result["not_after"]


def test_daemon_records_a_renewal_failure(
    daemon: DaemonHarness, sshd: LoopbackSshd, tmp_path: Path
) -> None:
    """A renewal that needs a passphrase makes a failed run whose result and log say so."""
    tmp = tmp_path / "token"
    tmp.mkdir()
    make_token(tmp / "tokencert.pem", tmp / "tokenkey.pem", 3 * 3600)
    config = sshd.write_config(tmp / "ssh_config", down=[])
    init = init_command(tmp / "tokencert.pem", tmp / "tokenkey.pem", mode="passphrase")
    daemon.write("alien-token.yaml", _manifest(tmp, config, init))
    daemon.start()
    wait_for(lambda: daemon.job_status("alien-token")["valid"], 10)
    run = _run_once(daemon)
    assert run["state"] == "failed"
    assert run["exit_code"] == 3
    result = run["result"]
    assert isinstance(result, dict)
    assert result["renewed"] is False
    assert result["needs_passphrase"] is True
    assert result["alert"] is True
    assert result["hosts_ok"] == 4
    log = daemon.cli("logs", str(run["run_id"])).stdout
    assert "ERROR: renewal failed" in log
    assert "passphrase" in log
    assert "WARNING:" in log
