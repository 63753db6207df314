"""The daemon at scale: a thousand manifests in one directory, end to end.

Behaviour only; the timings (start-up, change latency, idle CPU, memory) are printed by
benchmarks/daemon_scale.py.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import DaemonHarness, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.daemon]

N_VALID = 1000
TIMEZONES = ("UTC", "Europe/Zurich", "America/New_York", "Asia/Kolkata", "Australia/Sydney")

# file name -> (text, the line:col the daemon must report). Positions as `validate` prints.
INVALID = {
    "zz-bad-tz.yaml": (
        "apiVersion: orchestrator/v1\nkind: Command\nname: bad-tz\n"
        'schedule: {cron: "0 3 * * *", timezone: Mars/Olympus}\nspec: {command: ["true"]}\n',
        "4:41",
    ),
    "zz-bad-cron.yaml": (
        "apiVersion: orchestrator/v1\nkind: Command\nname: bad-cron\n"
        'schedule:\n  cron: "61 3 * * *"\nspec: {command: ["true"]}\n',
        "5:9",
    ),
    "zz-bad-field.yaml": (
        "apiVersion: orchestrator/v1\nkind: Command\nname: bad-field\n"
        'spec:\n  command: ["true"]\n  comand: ["x"]\n',
        "6:3",
    ),
    "zz-bad-yaml.yaml": ("apiVersion: orchestrator/v1\nkind: Command\nname: [x\n", "4:1"),
    # A second file claiming an existing job's name: the first file by name keeps the job.
    "zz-duplicate.yaml": (
        'apiVersion: orchestrator/v1\nkind: Command\nname: job-0001\nspec: {command: ["true"]}\n',
        "3:7",  # the clashing name value
    ),
}


def _manifest(i: int, now: datetime) -> tuple[str, str, datetime | None]:
    """Job ``i``: its file text, its kind of schedule, and the next fire time expected for a
    cron job (a daily cron 12 h from now in one of several zones, so none fires here)."""
    name = f"job-{i:04d}"
    expected: datetime | None = None
    if i % 100 == 99:
        kind, schedule = "manual", ""  # no schedule: runs only when triggered or after others
    elif i % 2 == 0:
        tz = TIMEZONES[i % len(TIMEZONES)]
        target = (now + timedelta(hours=12)).replace(second=0, microsecond=0)
        local = target.astimezone(ZoneInfo(tz))
        kind = "cron"
        schedule = f'schedule: {{cron: "{local.minute} {local.hour} * * *", timezone: {tz}}}\n'
        expected = target
    else:
        kind, schedule = "every", "schedule: {every: 1h}\n"
    suspend = "suspend: true\n" if i % 97 == 5 else ""
    text = (
        f"apiVersion: orchestrator/v1\nkind: Command\nname: {name}\n{schedule}{suspend}"
        f'spec: {{command: [bash, -c, "echo {name}"]}}\n'
    )
    return text, kind, expected


def _write(jobs_dir: Path, name: str, text: str) -> None:
    path = jobs_dir / name
    path.write_text(text)
    os.chmod(path, 0o644)


def test_thousand_manifests_loaded_scheduled_and_reloaded(daemon: DaemonHarness) -> None:
    """With 1,000 valid manifests and a few invalid ones, `status --json` lists every valid
    job with its next run (cron times in their zones, every-1h an hour from start), suspended
    and unscheduled ones without one, each invalid file with a path:line:col error; a schedule
    edit of one manifest is then reflected without disturbing the others."""
    now = datetime.now(UTC)
    kinds: dict[str, str] = {}
    expected_cron: dict[str, datetime] = {}
    suspended: set[str] = set()
    for i in range(N_VALID):
        text, kind, expected = _manifest(i, now)
        name = f"job-{i:04d}"
        _write(daemon.jobs_dir, f"{name}.yaml", text)
        kinds[name] = kind
        if expected is not None:
            expected_cron[name] = expected
        if "suspend: true" in text:
            suspended.add(name)
    for file_name, (text, _) in INVALID.items():
        _write(daemon.jobs_dir, file_name, text)
    # The invalid files were written a moment ago: without this they would be held back as
    # possibly still being written (the settle time), which tests/faults/ covers.
    daemon.extra_env["ORCH_SETTLE_S"] = "0"
    assert suspended
    assert len(expected_cron) > 400

    started = datetime.now(UTC)
    daemon.start()
    status = daemon.status()
    assert status["daemon"]["running"]
    rows = {r["path"]: r for r in status["jobs"]}
    valid = {r["name"]: r for r in status["jobs"] if r["valid"]}
    assert sorted(valid) == sorted(kinds)
    assert len(status["jobs"]) == N_VALID + len(INVALID)

    for name, row in valid.items():
        assert row["in_effect"]
        assert row["error"] is None
        if name in suspended or kinds[name] == "manual":
            assert row["next_run"] is None, name
            assert row["suspended"] == (name in suspended)
            continue
        next_run = datetime.fromisoformat(row["next_run"])
        if kinds[name] == "cron":
            assert next_run == expected_cron[name], (name, row["schedule"])
        else:
            assert row["schedule"] == "every 1h"
            assert (
                started + timedelta(hours=1) <= next_run <= datetime.now(UTC) + timedelta(hours=1)
            ), name

    for file_name, (_, position) in INVALID.items():
        path = daemon.jobs_dir / file_name
        row = rows[str(path)]
        assert not row["valid"]
        assert row["next_run"] is None
        assert re.match(rf"{re.escape(str(path))}:{position}: ", row["error"]), row["error"]
    # The duplicate did not displace the first file's job.
    assert valid["job-0001"]["path"].endswith("job-0001.yaml")

    # Edit one every-1h job to every 3h (atomic rename, as editors do).
    before = {n: r["next_run"] for n, r in valid.items()}
    edited = "job-0003"
    assert kinds[edited] == "every"
    assert edited not in suspended
    text, _, _ = _manifest(3, now)
    edited_at = datetime.now(UTC)
    daemon.write(f"{edited}.yaml", text.replace("every: 1h", "every: 3h"))
    row = wait_for(
        lambda: (r := daemon.job_status(edited))["schedule"] == "every 3h" and r, 10, 0.2
    )
    next_run = datetime.fromisoformat(row["next_run"])
    assert edited_at + timedelta(hours=3) <= next_run <= datetime.now(UTC) + timedelta(hours=3)
    after = {r["name"]: r["next_run"] for r in daemon.status()["jobs"] if r["valid"]}
    assert {n: v for n, v in after.items() if n != edited} == {
        n: v for n, v in before.items() if n != edited
    }
    assert daemon.history() == []  # nothing was due: no run started
