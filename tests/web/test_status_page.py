"""The status page and /metrics of a real daemon, read as a person and as Prometheus do:
headless Chromium loads the page (its script, the DOM it builds, a screenshot), the page
follows a run to its end without a reload, and prometheus_client's parser reads /metrics."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import DaemonHarness, wait_for
from tests.manifests import job
from tests.web.browser import browser

pytestmark = pytest.mark.daemon

SECRET = "WebhookSecret-9f8e7d"


def _url(daemon: DaemonHarness) -> str:
    http = wait_for(lambda: daemon.status()["daemon"].get("http"), 10)
    return str(http["url"])


def _rows(page_eval: object) -> dict[str, dict[str, str]]:
    return {row["job"]: row for row in page_eval}  # type: ignore[attr-defined]


ROWS_JS = """[...document.querySelectorAll('#jobs tbody tr')].map(tr => ({
  job: tr.dataset.job, state: tr.querySelector('.last-state').textContent,
  error: (tr.querySelector('.error') || {}).textContent || '',
  text: tr.textContent}))"""


def test_the_page_shows_jobs_and_follows_a_run_to_its_end(
    daemon: DaemonHarness, tmp_path: Path
) -> None:
    daemon.write("ok.yaml", job("ok", '["true"]', "schedule: {cron: '0 3 * * *'}"))
    daemon.write(
        "slow.yaml",
        job("slow", '[sleep, "3"]', f'notify: {{urls: ["json://127.0.0.1:9/{SECRET}"]}}'),
    )
    daemon.write("bad.yaml", "apiVersion: orchestrator/v1\nkind: Command\nname: bad\nspec: {}\n")
    daemon.start(extra_env={"ORCH_HTTP_ADDRESS": "127.0.0.1:0"})
    url = _url(daemon)
    daemon.cli("trigger", "ok")
    wait_for(lambda: daemon.history("ok") and daemon.history("ok")[0]["finished_at"], 10)
    with browser() as page:
        page.goto(url)
        rows = wait_for(lambda: (r := page.eval(ROWS_JS)) and len(r) == 3 and _rows(r), 15)
        assert rows["ok"]["state"] == "succeeded"
        assert "cron 0 3 * * * (UTC)" in rows["ok"]["text"]
        assert rows["slow"]["state"] == "never"
        assert "required field 'command' is missing" in rows["bad"]["error"]
        health = page.eval("document.getElementById('health').className")
        assert health == "health degraded"
        # a run starts and ends while the page stays open: it follows without a reload
        page.eval("window.__marker = 1")
        daemon.cli("trigger", "slow")
        wait_for(lambda: "running " in _rows(page.eval(ROWS_JS))["slow"]["text"], 10)
        wait_for(lambda: _rows(page.eval(ROWS_JS))["slow"]["state"] == "succeeded", 15)
        assert page.eval("window.__marker") == 1  # the same page, not a reload
        shot = page.screenshot(tmp_path / "status-page.png")
        text = page.eval("document.body.innerText")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000
    assert SECRET not in text
    assert "json://" not in text

    # /metrics, with the library's own parser
    with urllib.request.urlopen(url + "metrics", timeout=10) as r:
        families = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
    durations = families["orchestrator_run_duration_seconds"]
    counts = {s.labels["job"]: s.value for s in durations.samples if s.name.endswith("_count")}
    assert counts == {"ok": 1, "slow": 1}
    assert families["orchestrator_manifest_errors"].samples[0].value == 1

    # read-only: nothing but GET and HEAD
    request = urllib.request.Request(url + "api/status", method="POST", data=b"{}")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 405
    status = json.loads(urllib.request.urlopen(url + "api/status", timeout=10).read())
    assert SECRET not in json.dumps(status)
