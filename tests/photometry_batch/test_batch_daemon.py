"""A PhotometryBatch job under a real daemon: started by its data job's success (`after:`),
its progress in `status` while it runs, its counts and output folder in the run's result."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import DaemonHarness, wait_for
from tests.manifests import job
from tests.web.browser import browser

pytestmark = [pytest.mark.slow, pytest.mark.daemon]

PROGRESS_JS = "(document.querySelector('section.batch .progress') || {}).textContent"
OBJECTS_JS = """[...document.querySelectorAll('section.batch tr[data-object]')].map(tr => ({
  oid: tr.dataset.object, state: tr.children[2].textContent}))"""
PLOTS_JS = """Promise.all([...document.querySelectorAll('section.batch .plots img')].map(
  img => img.decode().then(() => [img.alt, img.naturalWidth], () => [img.alt, 0])))"""


def test_a_batch_runs_after_its_data_and_shows_progress(
    daemon: DaemonHarness, tmp_path: Path
) -> None:
    """The data job simulates three objects into a table; the batch, started by its success,
    publishes progress (status --json, the status table and the status page, in headless
    Chromium) and ends with every object measured and the summary in its own output folder,
    not in the state directory; the page then shows each object and its light-curve plot."""
    data = daemon.root / "sne"
    out = daemon.root / "results"
    simulate = " ".join(
        f"{sys.executable} -m orchestrator.dia.cli simulate --out {data}/sn{i} --size 192 "
        f"--epochs 3 --templates 1 --seed {i} --oid sn{i} --table {data}/objects.csv >/dev/null;"
        for i in (1, 2, 3)
    )
    daemon.write("data.yaml", job("sne-data", json.dumps(["bash", "-c", f"set -e; {simulate}"])))
    daemon.write(
        "batch.yaml",
        f"""\
apiVersion: orchestrator/v1
kind: PhotometryBatch
name: sne
after: [sne-data]
spec:
  objects: {data}/objects.csv
  output_dir: {out}
  parallel: 1
  pipeline: {{builtin: {{backend: cpu, cutout: 0}}}}
""",
    )
    daemon.start(extra_env={"NUMBA_NUM_THREADS": "1", "ORCH_HTTP_ADDRESS": "127.0.0.1:0"})
    with browser() as page:
        page.goto(daemon.status()["daemon"]["http"]["url"])
        daemon.cli("trigger", "sne-data")
        progress = wait_for(
            lambda: next(iter(daemon.job_status("sne").get("progress", {}).values()), None), 120
        )
        assert progress["total"] == 3
        assert progress["done"] < 3
        table = daemon.cli("status").stdout
        assert "running " in table
        assert "/3 done" in table
        shown = wait_for(lambda: page.eval(PROGRESS_JS), 30)
        assert " of 3 done" in shown
        run = wait_for(
            lambda: next((r for r in daemon.history("sne") if r["state"] == "succeeded"), None),
            300,
        )
        objects = wait_for(lambda: (o := page.eval(OBJECTS_JS)) and len(o) == 3 and o, 15)
        assert sorted(o["oid"] for o in objects) == ["sn1", "sn2", "sn3"]
        assert {o["state"] for o in objects} == {"measured"}
        plots = wait_for(lambda: (p := page.eval(PLOTS_JS)) and len(p) == 4 and p, 15)
        assert all(width > 100 for _, width in plots), plots  # decoded, not broken images
        assert sorted(name for name, _ in plots)[0] == "lightcurves.png"
        page.screenshot(tmp_path / "batch-page.png")
    result = run["result"]
    assert result["counts"]["measured"] == 3
    assert run["message"] == "3 object-band(s): 3 measured"
    output = Path(result["output_dir"])
    assert output.parent == out / "sne"
    assert (output / "summary.csv").is_file()
    assert not any(daemon.root.joinpath("state").rglob("*.fits"))
