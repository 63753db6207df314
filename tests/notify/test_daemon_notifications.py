"""Notifications from a real daemon to a real SMTP server and a real webhook on loopback:
failure, recovery, overdue and alert each arrive once per transition, secrets in the URLs
reach neither the log, `status` nor history, and a receiver that is down is retried without
holding up runs."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.conftest import DaemonHarness, wait_for
from tests.manifests import job
from tests.notify.receivers import HOOK_TOKEN, SMTP_PASSWORD, http_hook, smtp_server

pytestmark = pytest.mark.daemon


def _finished(daemon: DaemonHarness, name: str, n: int) -> None:
    wait_for(lambda: len([r for r in daemon.history(name) if r["finished_at"]]) >= n, 15)


def _settle(daemon: DaemonHarness) -> None:
    """Long enough for a message that should not exist to have been sent (heartbeat 0.3 s)."""
    time.sleep(1.5)


def test_each_transition_sends_one_message_and_no_secret_leaks(
    daemon: DaemonHarness, tmp_path: Path
) -> None:
    flag = tmp_path / "broken"
    flag.touch()
    with smtp_server() as mail, http_hook() as hook:
        # the daemon-wide default: the webhook, its token from the daemon's environment
        (daemon.root / "orchestrator.toml").write_text(
            f'[notify]\non = ["failure", "recovery", "alert", "overdue"]\nurls = ["{hook.url()}"]\n'
        )
        daemon.write(
            "nightly.yaml",
            job(
                "nightly",
                f'[sh, -c, "echo checking; echo line-$RANDOM; test ! -e {flag}"]',
                f'notify:\n  urls: ["{mail.url}", "{hook.url()}"]',
            ),
        )
        daemon.write(
            "watch.yaml",
            job("watch", '["true"]', "schedule: {every: 1h}\nexpect: {success_within: 3s}"),
        )
        daemon.write(
            "token.yaml",
            job(
                "token",
                '[sh, -c, "echo \'{\\"alert\\": true, \\"warning\\": \\"expires in 2h\\", '
                '\\"summary\\": \\"token valid 2h\\"}\' > $ORCH_TASK_RESULT"]',
                "notify: {on: [alert]}",
            ),
        )
        hook.refuse = 2  # down at first: retried with backoff
        daemon.start(
            extra_env={
                "HOOK_TOKEN": HOOK_TOKEN,
                "ORCH_NOTIFY_BACKOFF_S": "0.3",
                "ORCH_HEARTBEAT_S": "0.3",
            }
        )
        daemon.cli("trigger", "nightly")
        _finished(daemon, "nightly", 1)
        wait_for(lambda: len(mail.messages) == 1 and "FAILED" in " ".join(hook.titles()), 20)
        assert mail.logins == [True]
        assert hook.refused == 2
        subject = mail.subjects()[0]
        assert subject.startswith("[orchestrator] FAILED: nightly, run ")
        body = mail.bodies()[0]
        assert "state: failed, exit code 1" in body
        assert "checking" in body
        assert "line-" in body
        assert [p for p, _ in hook.posts] == [f"/hook/{HOOK_TOKEN}"]

        # failing again: no second failure message
        daemon.cli("trigger", "nightly")
        _finished(daemon, "nightly", 2)
        _settle(daemon)
        assert len(mail.messages) == 1

        # mended: one recovery
        flag.unlink()
        daemon.cli("trigger", "nightly")
        _finished(daemon, "nightly", 3)
        wait_for(lambda: len(mail.messages) == 2, 15)
        assert mail.subjects()[1] == "[orchestrator] RECOVERED: nightly"
        assert "state: succeeded, exit code 0" in mail.bodies()[1]
        daemon.cli("trigger", "nightly")
        _finished(daemon, "nightly", 4)

        # overdue, then recovered by a success (webhook only: the default)
        wait_for(lambda: any("OVERDUE: watch" in t for t in hook.titles()), 15)
        daemon.cli("trigger", "watch")
        wait_for(lambda: "[orchestrator] RECOVERED: watch" in hook.titles(), 15)
        (daemon.jobs_dir / "watch.yaml").unlink()  # else overdue again 3 s later

        # an alert from a task's result, once for two runs
        daemon.cli("trigger", "token")
        _finished(daemon, "token", 1)
        daemon.cli("trigger", "token")
        _finished(daemon, "token", 2)
        _settle(daemon)
        alerts = [b for _, b in hook.posts if "ALERT: token" in str(b.get("title"))]
        assert len(alerts) == 1, hook.titles()
        assert "warning: expires in 2h" in alerts[0]["message"]

        _settle(daemon)
        # the run ids and the seconds waited vary
        titles = [re.sub(r"\d+s \(", "Ns (", t.split(",")[0]) for t in hook.titles()]
        assert sorted(titles) == sorted(
            [
                "[orchestrator] FAILED: nightly",
                "[orchestrator] RECOVERED: nightly",
                "[orchestrator] OVERDUE: watch: no success in Ns (expected within 3s)",
                "[orchestrator] RECOVERED: watch",
                "[orchestrator] ALERT: token",
            ]
        ), titles
        assert len(mail.messages) == 2

        status = daemon.cli("status", "--json", check=False).stdout
        notes = json.loads(status)["daemon"]["notifications"]
        assert (notes["pending"], notes["delivered"]) == (0, 7), notes
        history = daemon.cli("history", "--json").stdout
        daemon.stop()
    shown = daemon.log_path.read_text() + status + history
    for path in daemon.state_dir.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".log", ".sbatch", ".sh"):
            shown += path.read_text(errors="replace")
    assert "notification_failed" in shown  # the refused webhook was logged
    assert "json://127.0.0.1:" in shown  # ... by scheme and host
    for secret in (SMTP_PASSWORD, HOOK_TOKEN):
        assert secret not in shown
