"""Who may read the listener: loopback without a token, any other address only with one
(header, cookie or once in the address), read-only, and plots only from a run's own folder.
Real sockets on loopback; the token is forced with ORCH_HTTP_TOKEN as it would be off it."""

from __future__ import annotations

import stat
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from orchestrator.web.access import Address, AddressError, parse_address, token_for
from orchestrator.web.server import WebServer, run_images


def _ask(request: dict[str, Any]) -> dict[str, Any]:
    status = {"daemon": {"running": True, "pid": 1, "host": "h"}, "jobs": []}
    return {"ok": True, "status": status}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None


def _get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_addresses_are_parsed_and_loopback_is_recognised() -> None:
    assert parse_address("127.0.0.1:8765") == Address("127.0.0.1", 8765)
    assert parse_address("[::1]:0") == Address("::1", 0)
    for bad in ("8765", "host:", "host:99999", ":80"):
        with pytest.raises(AddressError, match="expected HOST:PORT"):
            parse_address(bad)
    assert Address("127.0.0.1", 1).loopback
    assert Address("localhost", 1).loopback
    assert not Address("0.0.0.0", 1).loopback


def test_off_loopback_a_token_is_made_once_and_kept_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORCH_HTTP_TOKEN", raising=False)
    assert token_for(Address("127.0.0.1", 1), tmp_path) is None
    token = token_for(Address("0.0.0.0", 1), tmp_path)
    assert token
    assert len(token) >= 40
    assert token_for(Address("0.0.0.0", 1), tmp_path) == token
    assert stat.S_IMODE((tmp_path / "http-token").stat().st_mode) == 0o600
    monkeypatch.setenv("ORCH_HTTP_TOKEN", "given")
    assert token_for(Address("127.0.0.1", 1), tmp_path) == "given"


def test_with_a_token_nothing_is_served_without_it(tmp_path: Path) -> None:
    web = WebServer(Address("127.0.0.1", 0), _ask, "s3cret-token")
    web.start()
    try:
        base = web.url
        assert _get(base + "api/status")[0] == 401
        assert _get(base + "api/status", Authorization="Bearer wrong")[0] == 401
        assert _get(base + "api/status", Authorization="Bearer s3cret-token")[0] == 200
        # the page: ?token= once, then a cookie, and the token leaves the address bar
        code, headers, _ = _get(base + "?token=s3cret-token")
        assert code == 303
        assert headers["Location"] == "/"
        cookie = headers["Set-Cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        code, headers, body = _get(base, Cookie=cookie.split(";")[0])
        assert code == 200
        assert b"<title>orchestrator</title>" in body
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert _get(base + "metrics")[0] == 401
    finally:
        web.stop()


def test_only_the_plots_inside_a_runs_folder_are_served(tmp_path: Path) -> None:
    out = tmp_path / "out" / "job" / "run1"
    (out / "tasks" / "sn1").mkdir(parents=True)
    grid = out / "lightcurves.png"
    grid.write_bytes(b"\x89PNG grid")
    curve = out / "tasks" / "sn1" / "sn1_R062_lightcurve.csv"
    curve.with_suffix(".png").write_bytes(b"\x89PNG one")
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"not yours")
    result = {
        "output_dir": str(out),
        "files": {"png": str(grid)},
        "objects": [
            {"lightcurve": str(curve)},
            {"lightcurve": str(out / ".." / ".." / ".." / "secret.csv")},  # escapes the folder
            {"lightcurve": str(out / "missing.csv")},
        ],
    }
    assert run_images(result) == [grid, curve.with_suffix(".png")]
    assert run_images({"files": {"png": str(outside)}}) == []  # no output folder: nothing
