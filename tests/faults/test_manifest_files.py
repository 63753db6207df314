"""What a jobs directory can hold besides good manifests, and how a scan copes: entries that are
not regular files, files whose reads never return, a newcomer claiming a running job's name,
and a file caught half-written (issue 8, points 6, 9 and 16)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.manifests import reading
from orchestrator.manifests.loader import (
    JobsDirUnreadableError,
    scan_directory,
    validate_paths,
)
from orchestrator.manifests.scan import ScanCache
from tests.conftest import DaemonHarness, wait_for
from tests.manifests import job


def good(name: str) -> str:
    return job(name, "[echo, hi]")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o644)
    return path


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    d = tmp_path / "jobs.d"
    d.mkdir()
    d.chmod(0o755)
    return d


def messages(scan_invalid: dict[Path, object]) -> dict[str, str]:
    return {p.name: str(e).split(": ", 1)[1] for p, e in scan_invalid.items()}


def hostile_entries(jobs: Path) -> dict[str, str]:
    """Put a FIFO, a directory, a dangling link (and, as root, a link to /proc/kmsg) named as
    manifests into ``jobs``; return file name -> the text its problem must contain."""
    os.mkfifo(jobs / "pipe.yaml", 0o644)
    (jobs / "bad.yaml").mkdir()
    (jobs / "dangling.yaml").symlink_to(jobs / "nowhere.yaml")
    expected = {
        "pipe.yaml": "not a regular file (a FIFO)",
        "bad.yaml": "not a regular file (a directory)",
        "dangling.yaml": f"dangling symbolic link to {jobs / 'nowhere.yaml'}",
    }
    if os.geteuid() == 0 and os.path.exists("/proc/kmsg"):
        # Only root may open it; a read waits for the next kernel message (forever, here).
        (jobs / "kmsg.yaml").symlink_to("/proc/kmsg")
        expected["kmsg.yaml"] = "a file on procfs"
    return expected


# --------------------------------------------------------------------------- 9: not regular


def test_scan_reports_entries_that_are_not_regular_files(jobs: Path) -> None:
    """A FIFO, a directory named bad.yaml, a dangling link and (as root) a link to /proc/kmsg
    are each in the scan's invalid set with what they are, within a couple of seconds, and
    the good manifest still loads (before, the first three were skipped unseen and the last
    hung the daemon for good)."""
    write(jobs / "good.yaml", good("good"))
    expected = hostile_entries(jobs)
    t0 = time.monotonic()
    scan = scan_directory(jobs)
    assert time.monotonic() - t0 < 2
    assert set(scan.valid) == {"good"}
    found = messages(scan.invalid)  # type: ignore[arg-type]
    assert set(found) == set(expected)
    for name, text in expected.items():
        assert text in found[name], (name, found[name])


def test_validate_on_a_fifo_returns_promptly_with_a_clear_error(tmp_path: Path) -> None:
    """`validate <fifo>` exits 1 at once with 'not a regular file (a FIFO)' (it used to wait
    for a writer forever)."""
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo, 0o644)
    t0 = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "validate", str(fifo)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert time.monotonic() - t0 < 15
    assert result.returncode == 1
    assert result.stdout == f"{fifo}:1:1: not a regular file (a FIFO)\n"


def test_validate_reports_every_hostile_entry_of_a_directory(jobs: Path) -> None:
    """`validate <dir>` reports each entry that is not a regular file, by path, and exits 1."""
    write(jobs / "good.yaml", good("good"))
    expected = hostile_entries(jobs)
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "validate", str(jobs)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    lines = {Path(line.split(":", 1)[0]).name: line for line in result.stdout.splitlines()}
    assert set(lines) == set(expected)
    for name, text in expected.items():
        assert text in lines[name]


def test_validate_names_a_dangling_links_target(tmp_path: Path) -> None:
    """`validate <dangling link>` says where the link points instead of 'no such file'."""
    link = tmp_path / "gone.yaml"
    link.symlink_to(tmp_path / "target.yaml")
    _, problems = validate_paths([link])
    assert [p.message for p in problems] == [f"dangling symbolic link to {tmp_path}/target.yaml"]


# --------------------------------------------------------------------------- 9: deadlines


@pytest.fixture
def hung_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[set[str], threading.Event]]:
    """Make reads of chosen paths block until released, as on a hung NFS server. A fake: a
    hung file server cannot exist on these machines, and /proc/kmsg (which does block) is
    refused before it is read, on purpose."""
    hung: set[str] = set()
    release = threading.Event()
    real = reading._read

    def read(path: Path, *args: object) -> reading.FileRead:
        if str(path) in hung:
            release.wait(30)
        return real(path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(reading, "_read", read)
    yield hung, release
    release.set()
    wait_for(lambda: not reading.stuck_reads(), 10)


def job_row(daemon: DaemonHarness, name: str) -> dict[str, object] | None:
    return next((r for r in daemon.status()["jobs"] if r["name"] == name), None)


def read_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("orchestrator-read "))


def test_a_read_that_hangs_is_reported_and_not_retried_while_stuck(
    jobs: Path, hung_reads: tuple[set[str], threading.Event]
) -> None:
    """A file whose read does not return is reported after the deadline ('read did not
    finish within N s (hung file system?)') while the other files load; the next scans do not
    read it again while that read is stuck (no new thread, no wait), and once it returns the
    file is read normally."""
    hung, release = hung_reads
    write(jobs / "a.yaml", good("a"))
    stuck = write(jobs / "b.yaml", good("b"))
    hung.add(str(stuck))
    t0 = time.monotonic()
    scan = scan_directory(jobs, read_timeout_s=0.3)
    assert 0.3 <= time.monotonic() - t0 < 2
    assert set(scan.valid) == {"a"}
    assert "read did not finish within 0.3 s (hung file system?)" in str(scan.invalid[stuck])
    threads = read_threads()
    t0 = time.monotonic()
    again = scan_directory(jobs, read_timeout_s=0.3)
    assert time.monotonic() - t0 < 0.25
    assert "an earlier read has not finished" in str(again.invalid[stuck])
    assert read_threads() == threads
    release.set()
    wait_for(lambda: not reading.stuck_reads(), 5)
    assert set(scan_directory(jobs, read_timeout_s=0.3).valid) == {"a", "b"}


def test_hung_reads_leave_a_bounded_number_of_threads(
    jobs: Path, hung_reads: tuple[set[str], threading.Event]
) -> None:
    """However many files hang, at most MAX_STUCK_READS threads are left behind; the files
    past that are reported without being read."""
    hung, _ = hung_reads
    count = reading.MAX_STUCK_READS + 4
    for i in range(count):
        hung.add(str(write(jobs / f"h{i:02}.yaml", good(f"h{i:02}"))))
    scan = scan_directory(jobs, read_timeout_s=0.05)
    assert len(scan.invalid) == count
    assert len(reading.stuck_reads()) == reading.MAX_STUCK_READS
    assert read_threads() <= reading.MAX_STUCK_READS
    again = scan_directory(jobs, read_timeout_s=0.05)
    assert read_threads() <= reading.MAX_STUCK_READS
    assert len(again.invalid) == count
    assert any("earlier reads have not finished" in str(e) for e in scan.invalid.values())


def test_a_listing_that_hangs_raises_instead_of_returning_nothing(
    jobs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A jobs directory whose listing does not return raises JobsDirUnreadableError after the
    deadline (an empty scan would make the daemon remove every job). A fake hang, as above."""
    release = threading.Event()
    real = os.scandir

    def scandir(path: object) -> object:
        if Path(str(path)) == jobs:
            release.wait(30)
        return real(path)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(JobsDirUnreadableError, match=r"did not finish within 0\.2 s"):
        scan_directory(jobs, read_timeout_s=0.2)
    release.set()
    wait_for(lambda: not reading.stuck_reads(), 5)


def test_scans_from_several_threads_agree(jobs: Path) -> None:
    """scan_directory may run in worker threads at once (each with its own cache): every scan
    sees the same valid and invalid files."""
    for i in range(20):
        write(jobs / f"j{i:02}.yaml", good(f"j{i:02}"))
    write(jobs / "zz-bad.yaml", "apiVersion: [")
    results: list[tuple[frozenset[str], frozenset[Path]]] = []

    def work() -> None:
        cache: ScanCache = {}
        for _ in range(5):
            scan = scan_directory(jobs, cache=cache)
            results.append((frozenset(scan.valid), frozenset(scan.invalid)))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 20
    assert len(set(results)) == 1


# --------------------------------------------------------------------------- 6: name owners


def test_the_owner_keeps_its_name_against_a_newcomer_that_sorts_first(jobs: Path) -> None:
    """A new file reusing a running job's name is the invalid one, even when it sorts first;
    its error names the file that holds the job."""
    owner = write(jobs / "b.yaml", good("x"))
    newcomer = write(jobs / "a.yaml", good("x"))
    scan = scan_directory(jobs, owners={"x": owner})
    assert scan.valid["x"].path == owner
    (problem,) = scan.invalid[newcomer].problems
    assert (problem.line, problem.col, problem.field) == (3, 7, "name")
    assert f"already defined in {owner}" in problem.message


def test_an_invalid_owner_still_holds_its_name(jobs: Path) -> None:
    """While the owner's file is invalid (its last valid version in effect), a newcomer with
    the same name is refused and told who holds it."""
    owner = write(jobs / "b.yaml", good("x") + "bogus: 1\n")
    newcomer = write(jobs / "a.yaml", good("x"))
    scan = scan_directory(jobs, owners={"x": owner})
    assert scan.valid == {}
    assert set(scan.invalid) == {owner, newcomer}
    assert f"held by {owner}" in str(scan.invalid[newcomer])


def test_a_name_is_free_once_its_owner_file_is_gone_or_renamed_the_job(jobs: Path) -> None:
    """When the owner's file is removed, or now defines another job, a newcomer gets the name."""
    newcomer = write(jobs / "a.yaml", good("x"))
    assert scan_directory(jobs, owners={"x": jobs / "gone.yaml"}).valid["x"].path == newcomer
    other = write(jobs / "b.yaml", good("y"))
    scan = scan_directory(jobs, owners={"x": other})
    assert scan.valid["x"].path == newcomer
    assert scan.valid["y"].path == other


# --------------------------------------------------------------------------- 16: settle time

HALF = "apiVersion: orchestrator/v1\nkind: Command\nname: slow\nspec:\n  comm"


def test_a_half_written_file_is_unsettled_not_invalid(jobs: Path) -> None:
    """A file caught after its first chunk is listed as unsettled until it has been left alone
    for the settle time, not reported invalid; once complete it loads; left incomplete past the
    settle time it is reported."""
    path = write(jobs / "slow.yaml", HALF)
    now = time.time()
    scan = scan_directory(jobs, settle_s=2.0, now=now)
    assert scan.invalid == {}
    assert scan.valid == {}
    changed = max(path.stat().st_mtime, path.stat().st_ctime)
    assert scan.unsettled == {path: pytest.approx(changed + 2.0)}
    later = scan_directory(jobs, settle_s=2.0, now=changed + 2.5)
    assert set(later.invalid) == {path}
    assert later.unsettled == {}
    with open(path, "a") as fh:
        fh.write("and: [echo, hi]\n")
    assert set(scan_directory(jobs, settle_s=2.0).valid) == {"slow"}


def test_an_unsettled_owner_keeps_its_name(jobs: Path) -> None:
    """While the owner's file is being rewritten (unsettled), its name is not given away."""
    owner = write(jobs / "b.yaml", HALF)
    newcomer = write(jobs / "a.yaml", good("slow"))
    scan = scan_directory(jobs, owners={"slow": owner}, settle_s=2.0)
    assert scan.valid == {}
    assert set(scan.unsettled) == {owner, newcomer}


def test_a_file_dated_far_in_the_future_is_reported(jobs: Path) -> None:
    """A file whose time stamp is further in the future than the settle time (a skewed NFS
    clock) is reported, not kept unsettled for ever."""
    path = write(jobs / "future.yaml", HALF)
    future = time.time() + 3600
    os.utime(path, (future, future))
    assert set(scan_directory(jobs, settle_s=2.0).invalid) == {path}


def test_without_a_settle_time_problems_are_reported_at_once(jobs: Path) -> None:
    """settle_s=0 (the default, what `validate` wants) reports a fresh invalid file at once."""
    path = write(jobs / "slow.yaml", HALF)
    scan = scan_directory(jobs)
    assert set(scan.invalid) == {path}
    assert scan.unsettled == {}


# --------------------------------------------------------------------------- daemon


def test_daemon_shows_hostile_entries_and_loads_the_rest(daemon: DaemonHarness) -> None:
    """A daemon whose jobs directory holds a FIFO, a directory, a dangling link and (as root) a
    link to /proc/kmsg stays responsive, shows each as an invalid file with what it is, and
    loads the good job."""
    expected = hostile_entries(daemon.jobs_dir)
    daemon.write("good.yaml", good("good"))
    daemon.start()

    def rows() -> dict[str, dict[str, object]] | None:
        found = {Path(r["path"]).name: r for r in daemon.status()["jobs"]}
        return found if set(expected) <= set(found) else None

    found = wait_for(rows, 15, interval_s=0.2)
    assert found["good.yaml"]["valid"] is True
    for name, text in expected.items():
        assert found[name]["valid"] is False
        assert text in str(found[name]["error"])


def test_daemon_newcomer_cannot_take_a_running_jobs_name(daemon: DaemonHarness) -> None:
    """A new file reusing a running job's name, sorting before the job's file, is shown invalid;
    the job keeps its file, also while that file is invalid."""
    daemon.write("b.yaml", good("x"))
    daemon.start()
    daemon.write("a.yaml", good("x").replace("hi", "newcomer"))

    def newcomer_refused() -> dict[str, dict[str, object]] | None:
        found = {Path(r["path"]).name: r for r in daemon.status()["jobs"]}
        a = found.get("a.yaml")
        return found if a is not None and a["valid"] is False else None

    found = wait_for(newcomer_refused, 15, interval_s=0.2)
    assert found["b.yaml"]["name"] == "x"
    assert found["b.yaml"]["valid"] is True
    assert "already defined in" in str(found["a.yaml"]["error"])
    daemon.write("b.yaml", good("x") + "bogus: 1\n")
    x = wait_for(
        lambda: (row := job_row(daemon, "x")) is not None and row["valid"] is False and row,
        15,
        interval_s=0.2,
    )
    assert x["path"] == str(daemon.jobs_dir / "b.yaml")
    assert x["in_effect"] is True
    assert not any(e.get("event") == "job_changed" for e in daemon.events())


def test_daemon_waits_for_a_file_written_in_two_chunks(daemon: DaemonHarness) -> None:
    """A manifest written in two chunks 0.5 s apart (a slow scp) is added once complete, and
    the daemon never logs it as invalid."""
    daemon.start()
    path = daemon.jobs_dir / "slow.yaml"
    text = good("slow")
    with open(path, "w") as fh:
        os.fchmod(fh.fileno(), 0o644)
        fh.write(text[:60])
        fh.flush()
        time.sleep(0.5)
        fh.write(text[60:])
    wait_for(lambda: (row := job_row(daemon, "slow")) is not None and row["valid"], 15, 0.2)
    time.sleep(2.5)  # past the settle time: a late report would show up now
    invalid = [e for e in daemon.events() if e.get("event", "").startswith("manifest_invalid")]
    assert invalid == []
    assert any(e.get("event") == "job_added" and e.get("job") == "slow" for e in daemon.events())
