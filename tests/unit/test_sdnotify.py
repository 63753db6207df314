"""sd_notify datagrams sent to a real AF_UNIX datagram socket, as systemd would receive them."""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.sdnotify import STATUS_MAX_CHARS, Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def _recv(sock: socket.socket) -> str:
    return sock.recv(4096).decode("utf-8")


def test_messages_from_env_to_path_socket(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With NOTIFY_SOCKET set to a path, each call sends its exact sd_notify datagram."""
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    notifier = Notifier.from_env()
    assert notifier.enabled

    assert notifier.ready()
    assert _recv(sock) == "READY=1"
    notifier.status("3 jobs loaded\n1 running")
    assert _recv(sock) == "STATUS=3 jobs loaded 1 running"
    notifier.watchdog()
    assert _recv(sock) == "WATCHDOG=1"
    notifier.ready_after_reload()
    assert _recv(sock) == "READY=1"
    notifier.stopping()
    assert _recv(sock) == "STOPPING=1"


def test_reloading_carries_monotonic_usec(listener: tuple[socket.socket, str]) -> None:
    """RELOADING=1 comes with MONOTONIC_USEC taken from CLOCK_MONOTONIC in microseconds."""
    sock, path = listener
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier(path).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    match = re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=(\d+)", _recv(sock))
    assert match is not None
    assert before <= int(match.group(1)) <= after


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """NOTIFY_SOCKET='@name' reaches the socket bound at NUL+name in the abstract namespace."""
    name = f"orch-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert Notifier.from_env().ready()
        assert _recv(sock) == "READY=1"


def test_long_status_is_truncated(listener: tuple[socket.socket, str]) -> None:
    """A long status is cut to STATUS_MAX_CHARS characters ending in an ellipsis."""
    sock, path = listener
    Notifier(path).status("x" * 1000)
    text = _recv(sock)
    assert text.startswith("STATUS=xxx")
    assert text.endswith("…")
    assert len(text) == len("STATUS=") + STATUS_MAX_CHARS


def test_disabled_without_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without NOTIFY_SOCKET every call is a quiet no-op that reports nothing was sent."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier.from_env()
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False


def test_send_failure_never_raises(tmp_path: Path) -> None:
    """A socket that vanished makes sending return False instead of raising into the daemon."""
    notifier = Notifier(str(tmp_path / "gone.sock"))
    assert notifier.ready() is False
    assert notifier.watchdog() is False


@pytest.mark.parametrize(
    ("env", "expected_s"),
    [
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "garbage"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected_s: float | None) -> None:
    """The watchdog interval is half of WATCHDOG_USEC, and only when WATCHDOG_PID is ours."""
    assert Notifier.from_env(env).watchdog_interval_s == expected_s
