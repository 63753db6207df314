"""The AliEnToken task as a process (``python -m orchestrator.tasks.alien_token``): renewal
decisions, renewal failures, local copies and the env file, the result and exit status.

alien-token-init is replaced by a stand-in (bin/fake-alien-token-init) because the CERN token
service cannot be reached from the test machines; everything else is real.
"""

from __future__ import annotations

import os
import pty
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.alien_token.conftest import FAKE_ALIENV, init_command, manifest_dict, run_task
from tests.alien_token.tokens import make_token, not_after_of


def _spec(tmp_path: Path, **over: Any) -> dict[str, Any]:
    cert, key = tmp_path / "tmp" / "tokencert_1.pem", tmp_path / "tmp" / "tokenkey_1.pem"
    init = over.pop("init", {})
    spec: dict[str, Any] = {
        "cert_path": str(cert),
        "key_path": str(key),
        "renew_before": "1d",
        "alert_before": "12h",
        "init_command": init_command(cert, key, calls=tmp_path / "calls", **init),
        "init_timeout": "20s",
    }
    spec.update(over)
    return spec


def _paths(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "tmp" / "tokencert_1.pem", tmp_path / "tmp" / "tokenkey_1.pem"


def _calls(tmp_path: Path) -> int:
    path = tmp_path / "calls"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_valid_token_is_kept_and_copied_with_env_file(tmp_path: Path) -> None:
    """With more than renew_before left nothing is renewed; the token is copied (0600) to each
    directory and the env file points at the first copy."""
    cert, key = _paths(tmp_path)
    not_after = make_token(cert, key, 40 * 3600)
    dirs = [tmp_path / "home" / "tokens", tmp_path / "other"]
    env_file = tmp_path / "home" / "tokens" / "alien.env"
    run = run_task(
        tmp_path,
        _spec(
            tmp_path,
            targets={"directories": [str(d) for d in dirs], "env_file": str(env_file)},
        ),
    )
    assert run.returncode == 0, run.stderr
    assert _calls(tmp_path) == 0
    r = run.result
    assert r["renewed"] is False
    assert r["valid"] is True
    assert r["alert"] is False
    assert r["not_after"] == not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert r["valid_until"] == r["not_after"]  # what other jobs' requires: read
    assert 40 * 3600 - 120 < r["seconds_left"] <= 40 * 3600
    assert r["hosts"] == {}
    assert r["hosts_ok"] == 0
    assert r["hosts_failed"] == 0
    assert "token valid until" in r["summary"]
    assert "not renewed" in r["summary"]
    for d in dirs:
        assert (d / cert.name).read_bytes() == cert.read_bytes()
        assert (d / key.name).read_bytes() == key.read_bytes()
        assert stat.S_IMODE((d / key.name).stat().st_mode) == 0o600
        assert stat.S_IMODE((d / cert.name).stat().st_mode) == 0o600
        assert r["directories"][str(d)] == {"ok": True, "error": ""}
    text = env_file.read_text()
    assert f"export JALIEN_TOKEN_CERT={dirs[0] / cert.name}\n" in text
    assert f"export JALIEN_TOKEN_KEY={dirs[0] / key.name}\n" in text
    assert f"export ALIENPY_DEBUG_FILE={dirs[0] / 'alienpy_debug.log'}\n" in text
    # Sourcing it in a shell gives batch jobs the paths.
    shown = subprocess.run(
        ["bash", "-c", f'. "{env_file}" && echo "$JALIEN_TOKEN_KEY"'],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert shown.stdout.strip() == str(dirs[0] / key.name)
    # Never the token's contents in the log.
    secret_line = key.read_text().splitlines()[1]
    assert secret_line not in run.stdout + run.stderr
    assert cert.read_text().splitlines()[1] not in run.stdout + run.stderr


def test_short_token_is_renewed(tmp_path: Path) -> None:
    """Less than renew_before left: the init command runs once and the new token is reported
    and copied."""
    cert, key = _paths(tmp_path)
    make_token(cert, key, 3 * 3600)
    out = tmp_path / "tokens"
    run = run_task(
        tmp_path,
        _spec(tmp_path, init={"lifetime_s": 2 * 86400}, targets={"directories": [str(out)]}),
    )
    assert run.returncode == 0, run.stderr
    assert _calls(tmp_path) == 1
    r = run.result
    assert r["renewed"] is True
    assert r["renewal_error"] == ""
    assert r["not_after"] == not_after_of(cert).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert r["seconds_left"] > 47 * 3600
    assert (out / cert.name).read_bytes() == cert.read_bytes()
    assert "left, less than renew_before (1d)" in run.stdout


def test_missing_token_is_created_and_force_renews_a_good_one(tmp_path: Path) -> None:
    """No token at all means renewal; force renews even a fresh token."""
    cert, _ = _paths(tmp_path)
    run = run_task(tmp_path, _spec(tmp_path))
    assert run.returncode == 0, run.stderr
    assert run.result["renewed"] is True
    assert cert.exists()
    first = cert.read_bytes()
    run = run_task(tmp_path, _spec(tmp_path, force=True))
    assert run.returncode == 0, run.stderr
    assert run.result["renewed"] is True
    assert cert.read_bytes() != first
    assert _calls(tmp_path) == 2
    run = run_task(tmp_path, _spec(tmp_path))
    assert run.result["renewed"] is False
    assert _calls(tmp_path) == 2


def test_passphrase_prompt_fails_with_time_left_and_advice(tmp_path: Path) -> None:
    """An init command that asks for a passphrase fails the run (not a hang), saying so, with
    the time the old token has left and what to do; the old token is still distributed."""
    cert, key = _paths(tmp_path)
    make_token(cert, key, 20 * 3600)
    out = tmp_path / "tokens"
    run = run_task(
        tmp_path,
        _spec(tmp_path, init={"mode": "passphrase"}, targets={"directories": [str(out)]}),
    )
    assert run.returncode == 1
    r = run.result
    assert r["renewed"] is False
    assert r["needs_passphrase"] is True
    assert r["alert"] is False
    assert "passphrase" in r["renewal_error"]
    assert "19h 5" in r["summary"]
    assert "renewal FAILED" in r["summary"]
    assert "run alien-token-init by hand" in run.stderr
    assert "ERROR: renewal failed" in run.stderr
    assert "left (until" in run.stderr
    assert (out / cert.name).read_bytes() == cert.read_bytes()


def test_alert_window_warns_on_every_run_until_fixed(tmp_path: Path) -> None:
    """Inside alert_before with renewal failing, every run exits 3 with a warning; the first
    run whose renewal works clears it."""
    cert, key = _paths(tmp_path)
    make_token(cert, key, 5 * 3600)
    for _ in range(2):
        run = run_task(tmp_path, _spec(tmp_path, init={"mode": "fail"}))
        assert run.returncode == 3
        assert run.result["alert"] is True
        assert run.result["summary"].startswith("WARNING:")
        assert "inside alert_before (12h)" in run.result["warning"]
        assert "WARNING: the token expires in 4h 5" in run.stderr
        assert "503" in run.stdout  # the init command's own message is in the log
    run = run_task(tmp_path, _spec(tmp_path))
    assert run.returncode == 0
    assert run.result["alert"] is False
    assert run.result["warning"] == ""


def test_no_usable_token_is_never_distributed(tmp_path: Path) -> None:
    """With renewal failing and less than 600 s left, nothing is copied and the run alerts."""
    cert, key = _paths(tmp_path)
    make_token(cert, key, 300)
    out = tmp_path / "tokens"
    run = run_task(
        tmp_path,
        _spec(
            tmp_path,
            init={"mode": "fail"},
            targets={"directories": [str(out)], "env_file": str(out / "env")},
        ),
    )
    assert run.returncode == 3
    assert run.result["valid"] is False
    assert "NO USABLE TOKEN" in run.result["summary"]
    assert "clients refuse" in run.result["warning"]
    assert 0 < run.result["seconds_left"] < 600
    assert run.result["not_after"]
    assert not out.exists()


def test_key_of_another_token_gives_no_not_after(tmp_path: Path) -> None:
    """A certificate whose key does not match is renewed; when that fails the result has no
    not_after, so no other job's requires: check can take it for a valid token."""
    cert, key = _paths(tmp_path)
    make_token(cert, key, 40 * 3600)
    make_token(tmp_path / "other-c.pem", key, 40 * 3600)  # replaces the key only
    run = run_task(tmp_path, _spec(tmp_path, init={"mode": "fail"}))
    assert run.returncode == 3
    assert "does not belong" in run.stdout
    assert "valid_until" not in run.result
    assert "not_after" not in run.result
    assert "seconds_left" not in run.result
    assert run.result["valid"] is False


def test_hanging_init_is_killed_at_init_timeout(tmp_path: Path) -> None:
    """An init command that never ends is killed after init_timeout and the run fails."""
    cert, key = _paths(tmp_path)
    make_token(cert, key, 20 * 3600)
    run = run_task(tmp_path, _spec(tmp_path, init={"mode": "hang"}, init_timeout="1s"))
    assert run.returncode == 1
    assert "did not finish within 1 s" in run.result["renewal_error"]


def test_init_that_writes_nothing_is_a_failed_renewal(tmp_path: Path) -> None:
    """Exit 0 without a new certificate at cert_path is reported, not taken as success."""
    cert, key = _paths(tmp_path)
    make_token(cert, key, 20 * 3600)
    run = run_task(tmp_path, _spec(tmp_path, init={"mode": "noop"}))
    assert run.returncode == 1
    assert "left the same certificate" in run.result["renewal_error"]


def test_wrapper_runs_the_init_command(tmp_path: Path) -> None:
    """The wrapper (a stand-in for CVMFS's alienv, which is not mounted here) is run with the
    init command after it."""
    log = tmp_path / "alienv.log"
    run = run_task(
        tmp_path,
        _spec(
            tmp_path,
            wrapper=[sys.executable, str(FAKE_ALIENV), "setenv", "JAliEn-ROOT/1.9.4-1", "-c"],
            env={"FAKE_ALIENV_LOG": str(log)},
        ),
    )
    assert run.returncode == 0, run.stderr
    assert run.result["renewed"] is True
    assert log.read_text() == "JAliEn-ROOT/1.9.4-1\n"


def test_bad_manifest_exits_2(tmp_path: Path) -> None:
    """A manifest the model refuses stops the task with exit status 2 and the reason."""
    run = run_task(tmp_path, {"renew_before": "1m"})
    assert run.returncode == 2
    assert "renew_before" in run.stderr


def test_progress_goes_to_a_tty(tmp_path: Path) -> None:
    """Run from a terminal, the task writes its lines there (checked through a pty)."""
    import json

    cert, key = _paths(tmp_path)
    make_token(cert, key, 40 * 3600)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text(json.dumps(manifest_dict("tok", _spec(tmp_path))))
    env = dict(os.environ, ORCH_TASK_MANIFEST=str(run_dir / "manifest.json"))
    env.pop("ORCH_STATE_DIR", None)
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
    assert "token " in text
    assert "summary: token valid until" in text
