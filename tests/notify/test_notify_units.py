"""The parts of notifications that decide and write, without a daemon: transitions, URL
redaction, the configuration file, message text, and the outbox's retries and file (with a
real webhook on loopback)."""

from __future__ import annotations

import json
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestrator.config import ConfigError, ConfigFile, load
from orchestrator.manifests.loader import validate_paths
from orchestrator.notify.deliver import Outbox, apprise_send
from orchestrator.notify.message import compose, exit_code_text
from orchestrator.notify.model import Notify, effective, redact, scrub
from orchestrator.notify.transitions import Seen, latest_judged, step, verdict
from orchestrator.store.base import RunRecord, RunState
from tests.conftest import wait_for
from tests.manifests import job
from tests.notify.receivers import http_hook

NOW = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)


def _run(run_id: str, state: str, **result: object) -> RunRecord:
    return RunRecord(
        run_id=run_id, job="j", manifest_hash="h", trigger="schedule", attempt=1, state=state,
        created_at=NOW, started_at=NOW - timedelta(seconds=75), finished_at=NOW,
        exit_code=0 if state == "succeeded" else 1, log_path=None, run_dir=None,
        executor="local", pid=None, pid_start_time=None, scheduled_for=None, retry_of=None,
        message=None, result=dict(result),
    )  # fmt: skip


def _walk(runs: list[tuple[RunRecord | None, bool, bool]]) -> list[list[str]]:
    seen, out = Seen(), []
    for run, retry_pending, late in runs:
        seen, events = step(seen, run, verdict(run, retry_pending), late)
        out.append(events)
    return out


def test_one_message_per_transition() -> None:
    fail, ok = _run("r1", "failed"), _run("r2", "succeeded")
    alert = _run("r3", "succeeded", alert=True)
    assert _walk(
        [(fail, False, False), (_run("r1b", "timed_out"), False, False), (ok, False, False),
         (ok, False, False), (alert, False, False), (alert, False, False),
         (_run("r4", "failed", alert=True), False, False), (fail, False, False),
         (ok, False, True), (ok, False, True), (ok, False, False)]
    ) == [["failure"], [], ["recovery"], [], ["alert"], [], [], ["failure"],
          ["recovery", "overdue"][1:], [], ["recovery"]]  # fmt: skip


def test_a_failure_whose_retry_is_to_come_decides_nothing() -> None:
    fail = _run("r1", "failed")
    assert _walk([(fail, True, False), (fail, False, False)]) == [[], ["failure"]]
    assert verdict(None, False) is None


def test_runs_that_say_nothing_about_the_job_are_not_judged() -> None:
    newest_first = [
        _run("c", RunState.CANCELLED),
        _run("i", RunState.INTERRUPTED),
        _run("m", RunState.MISSED),
        _run("f", RunState.FAILED),
    ]
    judged = latest_judged(newest_first)
    assert judged is not None
    assert judged.run_id == "f"


def test_seen_survives_its_json_and_garbage() -> None:
    seen = Seen(frozenset({"failure", "overdue"}), "r9")
    assert Seen.from_json(json.loads(json.dumps(seen.to_json()))) == seen
    assert Seen.from_json("nonsense") == Seen()


@pytest.mark.parametrize(
    ("url", "shown", "secrets"),
    [
        ("mailto://ops:pa55word@smtp.example.org?to=x@example.org", "mailto://smtp.example.org/…",
         ["pa55word"]),
        ("json://127.0.0.1:8080/hook/T0kenValue", "json://127.0.0.1:8080/…", ["T0kenValue"]),
        ("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ", "slack://t…2/…",
         ["TIiajkdnlazkcOXrIdevi7FQ", "A1BRTD4JD"]),
        ("ntfy://ntfy.example.org/${TOPIC}", "ntfy://ntfy.example.org/…", []),
        ("mmost://chat.example.org/8ie3jdwwbkf8yy3tcqrf3mz4jr", "mmost://chat.example.org/…",
         ["8ie3jdwwbkf8yy3tcqrf3mz4jr"]),
    ],
)  # fmt: skip
def test_a_url_is_shown_by_scheme_and_host_only(url: str, shown: str, secrets: list[str]) -> None:
    assert redact(url) == shown
    said = f"failed to send to {url}: 401 for {' and '.join(secrets)}"
    scrubbed = scrub(said, [url])
    for secret in secrets:
        assert secret not in scrubbed


def test_a_bad_url_is_refused_without_repeating_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "j.yaml"
    path.write_text(
        job("j", '["true"]', 'notify:\n  urls: ["json://h/ok", "nosuchservice://u:Secret99@h/x"]')
    )
    loaded, problems = validate_paths([path])
    assert not loaded
    assert [str(p) for p in problems] == [
        f"{path}:5:25: notify.urls.1: not a nosuchservice:// URL that Apprise accepts (an "
        "unknown scheme or a missing part; the URL is not repeated here as it may hold a "
        "secret): see https://github.com/caronc/apprise/wiki for the form of each service"
    ]
    assert "Secret99" not in capsys.readouterr().err
    with pytest.raises(ValueError, match="SCHEME://"):
        Notify(urls=["just-a-word"])


def test_a_manifest_block_overrides_the_daemon_default_field_by_field() -> None:
    daemon = Notify(on=["failure"], urls=["json://127.0.0.1:1/a"])
    assert effective(Notify(on=["overdue"]), daemon).model_dump() == {
        "on": ("overdue",), "urls": ("json://127.0.0.1:1/a",), "log_lines": 20,
    }  # fmt: skip
    assert not effective(Notify(on=[]), daemon).active
    assert effective(None, None).on == ("failure", "recovery", "alert", "overdue")
    assert not effective(None, None).active  # no URL: nothing to send


def test_the_configuration_file_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator.toml"
    assert load(path).notify is None  # no file: defaults
    path.write_text(
        '# defaults\n[notify]\nurls = ["json://127.0.0.1:9/x"]\non = ["failure", "sometimes"]\n'
    )
    with pytest.raises(ConfigError) as info:
        load(path)
    assert f"{path}:4: notify.on.1: " in str(info.value)
    path.write_text("[notify]\nurl = 3\n")
    with pytest.raises(ConfigError, match=r":2: notify.url: unknown setting"):
        load(path)
    path.write_text("[notify\n")
    with pytest.raises(ConfigError, match=r"not valid TOML.*line 1"):
        load(path)
    # a bad edit keeps the last good file in effect
    path.write_text('[notify]\non = ["failure"]\n')
    config = ConfigFile(path)
    assert config.refresh()
    assert config.current.notify == Notify(on=["failure"])
    path.write_text("[notify]\non = [1]\n")
    assert not config.refresh()
    assert config.error
    assert config.current.notify == Notify(on=["failure"])


def test_exit_codes_read_as_a_shell_shows_them() -> None:
    assert exit_code_text(-15) == "143 (SIGTERM)"
    assert exit_code_text(-9) == "137 (SIGKILL)"
    assert exit_code_text(3) == "3"
    assert exit_code_text(None) == "none"


def test_a_failure_message_has_the_run_the_result_and_the_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    hosts = {"login01": {"ok": True}, "login02": {"ok": False, "error": "ssh: timeout"}}
    run = _run(
        "20261130-0300-ab",
        "failed",
        summary="renewal FAILED",
        seconds_left=7200,
        valid_until="2026-11-30T05:00:00+00:00",
        hosts_failed=1,
        hosts=hosts,
    )
    run = RunRecord(**{**run.__dict__, "log_path": str(log), "exit_code": -15})
    text = compose("failure", "token", "AliEnToken", "login01", run, None, 5)
    assert text.title == "[orchestrator] FAILED: token, run 20261130-0300-ab failed"
    body = text.body
    assert "state: failed, exit code 143 (SIGTERM), took 1m15s" in body
    assert "result: renewal FAILED" in body
    assert "token: 2h left (until 2026-11-30T05:00:00+00:00)" in body
    assert "hosts failed: 1 of 2" in body
    assert "login02: ssh: timeout" in body
    assert body.rstrip().endswith("line 99")
    assert "line 94" not in body
    assert "line 95" in body


def test_the_outbox_retries_then_delivers_and_keeps_what_is_left(tmp_path: Path) -> None:
    path = tmp_path / "outbox.json"
    with http_hook() as hook:
        hook.refuse = 2
        box = Outbox(path, apprise_send, backoff_s=0.2)
        box.start()
        box.put("j", "failure", "t1", "b1", (hook.url("tok1"),))
        wait_for(lambda: box.status()["delivered"] == 1, 15)
        assert hook.refused == 2
        assert len(hook.posts) == 1
        assert box.status()["last_error"].startswith("json://127.0.0.1:")
        box.stop()
        assert not path.exists()  # nothing left
        # a receiver that stays down: what is left is kept for the next daemon (0600)
        hook.refuse = 1000
        box = Outbox(path, apprise_send, backoff_s=30)
        box.start()
        box.put("j", "recovery", "t2", "b2", (hook.url("tok2"),))
        wait_for(lambda: hook.refused >= 3, 10)
        box.stop(flush_s=0.5)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        kept = json.loads(path.read_text())
        assert [(k["title"], k["attempts"]) for k in kept] == [("t2", 1)]
        hook.refuse = 0
        box = Outbox(path, apprise_send, backoff_s=0.2)
        for item in kept:  # due now, as the next daemon would find it after a while
            item["due"] = time.time()
        path.write_text(json.dumps(kept))
        box.start()
        wait_for(lambda: [b.get("title") for _, b in hook.posts] == ["t1", "t2"], 15)
        box.stop()


def test_an_unset_variable_or_unknown_url_is_given_up_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
    attempt = apprise_send("json://127.0.0.1:9/${NO_SUCH_TOKEN}", "t", "b")
    assert attempt.permanent
    assert "${NO_SUCH_TOKEN} is not set" in (attempt.error or "")
    box = Outbox(None, apprise_send, backoff_s=0.1)
    box.start()
    box.put("j", "failure", "t", "b", ("json://127.0.0.1:9/${NO_SUCH_TOKEN}",))
    wait_for(lambda: box.status()["abandoned"] == 1, 10)
    assert box.status()["pending"] == 0
    box.stop()


def test_the_manifest_a_task_gets_has_no_notify_block(tmp_path: Path) -> None:
    """A Python task's copy of its manifest (manifest.json in the run directory, which may be
    on a shared file system for a Slurm job) leaves the URLs out."""
    from orchestrator.manifests.models import validate_manifest
    from orchestrator.tasks.base import build_invocation

    secret = "mailto://ops:Pw-in-manifest@smtp.example.org?to=x@example.org"
    manifest = validate_manifest(
        {
            "apiVersion": "orchestrator/v1",
            "kind": "O2Sync",
            "name": "o2",
            "notify": {"urls": [secret]},
            "spec": {"mode": "cvmfs", "pointer": {"symlink": str(tmp_path / "ptr")}},
        }
    )
    build_invocation(manifest, "r1", {}, run_dir=tmp_path)
    written = (tmp_path / "manifest.json").read_text()
    assert json.loads(written)["spec"]["mode"] == "cvmfs"
    assert "Pw-in-manifest" not in written


def test_validate_checks_the_configuration_file_beside_the_jobs_directory(tmp_path: Path) -> None:
    import subprocess
    import sys

    jobs = tmp_path / "jobs.d"
    jobs.mkdir(mode=0o755)
    (tmp_path / "orchestrator.toml").write_text('[notify]\non = ["failure", "sometimes"]\n')
    argv = [sys.executable, "-m", "orchestrator", "validate", "--jobs-dir", str(jobs)]
    bad = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 1
    assert bad.stdout.startswith(f"{tmp_path / 'orchestrator.toml'}:2: notify.on.1: ")
    (tmp_path / "orchestrator.toml").write_text('[notify]\non = ["failure"]\n')
    good = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert good.returncode == 0, good.stdout + good.stderr


def test_notify_test_sends_now_and_says_what_became_of_each_url(tmp_path: Path) -> None:
    """`notify-test JOB` sends one message to each of the job's URLs (the manifest's, the
    file's default otherwise) and exits 1 when one failed, naming it by scheme and host."""
    import subprocess
    import sys

    jobs = tmp_path / "jobs.d"
    jobs.mkdir(mode=0o755)
    with http_hook() as hook:
        (tmp_path / "orchestrator.toml").write_text(
            f'[notify]\nurls = ["{hook.url("DefaultTok1")}"]\n'
        )
        (jobs / "a.yaml").write_text(job("a", '["true"]', "notify: {on: [failure]}"))
        (jobs / "b.yaml").write_text(
            job(
                "b",
                '["true"]',
                f'notify: {{urls: ["{hook.url("BTok22")}", "json://127.0.0.1:9/Dead33"]}}',
            )
        )
        argv = [sys.executable, "-m", "orchestrator", "--jobs-dir", str(jobs), "notify-test"]
        ok = subprocess.run([*argv, "a"], capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert ok.stdout.strip() == f"sent      json://127.0.0.1:{hook.port}/…"
        assert [p for p, _ in hook.posts] == ["/hook/DefaultTok1"]
        assert "failure" in hook.posts[0][1]["message"]
        bad = subprocess.run([*argv, "b"], capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1
        assert bad.stdout.splitlines()[1].startswith("FAILED    json://127.0.0.1:9/…: ")
        assert "Dead33" not in bad.stdout + bad.stderr
        assert [p for p, _ in hook.posts][-1] == "/hook/BTok22"
