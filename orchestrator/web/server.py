"""The HTTP listener: ``/metrics`` (Prometheus' text format), the status page at ``/`` and the
JSON it reads (``/api/status``), and the light-curve plots of a run (``/api/runs/ID/images``).

Read-only by construction: GET and HEAD only, and every answer comes from the daemon's
read-only control requests (status, metrics, run), handled on its main loop like the command
line's. A thread per request, so a slow reader holds up no other. Nothing served is a secret
(notification URLs never reach ``status``); what needs a token off loopback: web/access.py.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog

from orchestrator.health import assess
from orchestrator.web.access import COOKIE, Address, allowed

log = structlog.get_logger("orchestrator.web")

Ask = Callable[[dict[str, Any]], dict[str, Any]]
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
IMAGE_MAX_BYTES = 20 * 1024 * 1024
HEADERS = {
    # the page's own script and style only; images from here (the plots) and data: none
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_IMAGE_PATH = re.compile(r"^/api/runs/([A-Za-z0-9._-]{1,80})/images(?:/(\d{1,6}))?$")


def run_images(result: dict[str, Any]) -> list[Path]:
    """The plots a run's result names (a batch's grid, each object's light curve), inside its
    output folder: a result cannot make the listener serve any other file."""
    root = result.get("output_dir")
    if not isinstance(root, str) or not root:
        return []
    base = Path(root).resolve()
    found: list[Path] = []
    grid = (result.get("files") or {}).get("png")
    if isinstance(grid, str):
        found.append(Path(grid))
    for row in result.get("objects") or []:
        curve = row.get("lightcurve") if isinstance(row, dict) else None
        if isinstance(curve, str) and curve:
            found.append(Path(curve).with_suffix(".png"))
    out = []
    for path in found:
        real = path.resolve()
        if real.suffix == ".png" and real.is_relative_to(base) and real.is_file():
            out.append(real)
    return out


class WebServer:
    """One listener on ``address``; ``ask`` answers control requests (on the main loop)."""

    def __init__(self, address: Address, ask: Ask, token: str | None) -> None:
        self.address = address
        self.ask = ask
        self.token = token
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        text = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{text}]" if ":" in text else text
        return f"http://{shown}:{port}/"

    def start(self) -> None:
        server = self

        class Handler(_Handler):
            web = server

        family_v6 = ":" in self.address.host
        httpd_class = _V6Server if family_v6 else ThreadingHTTPServer
        httpd = httpd_class((self.address.host, self.address.port), Handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="http", kwargs={"poll_interval": 0.5}
        )
        self._thread.daemon = True
        self._thread.start()
        log.info("http_listening", url=self.url, token_required=self.token is not None)

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()


class _V6Server(ThreadingHTTPServer):
    import socket as _socket

    address_family = _socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    web: WebServer
    server_version = "orchestrator"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the daemon's log is for what happens to jobs, not page views

    # ------------------------------------------------------------ methods

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        cookie = SimpleCookie(self.headers.get("Cookie") or "")
        given = next(iter(query.get("token") or []), None)
        if not allowed(
            self.web.token,
            self.headers.get("Authorization"),
            cookie[COOKIE].value if COOKIE in cookie else None,
            given,
        ):
            self._send(HTTPStatus.UNAUTHORIZED, b"a token is needed: see docs/status-page.md\n")
            return
        if given and url.path == "/":
            # once: the token moves into a cookie and out of the address bar and history
            self.send_response(HTTPStatus.SEE_OTHER)
            self.send_header("Set-Cookie", f"{COOKIE}={given}; HttpOnly; SameSite=Strict; Path=/")
            self.send_header("Location", "/")
            self._headers()
            self.end_headers()
            return
        try:
            self._route(url.path)
        except Exception as exc:  # a bad request is the reader's problem, never the daemon's
            log.exception("http_request_failed", path=url.path[:200])
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {exc}\n".encode())

    def _refuse(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self._headers()
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

    # ------------------------------------------------------------ routes

    def _route(self, path: str) -> None:
        if path in STATIC:
            name, ctype = STATIC[path]
            data = resources.files("orchestrator.web").joinpath("static", name).read_bytes()
            self._send(HTTPStatus.OK, data, ctype)
        elif path == "/metrics":
            answer = self.web.ask({"op": "metrics"})
            if not answer.get("ok"):
                self._unavailable(answer)
                return
            self._send(HTTPStatus.OK, answer["text"].encode(), "text/plain; version=0.0.4")
        elif path == "/api/status":
            answer = self.web.ask({"op": "status"})
            if not answer.get("ok"):
                self._unavailable(answer)
                return
            status = answer["status"]
            status["health"] = assess(status).to_json()
            self._json(status)
        elif match := _IMAGE_PATH.match(path):
            self._image(match.group(1), match.group(2))
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n")

    def _image(self, run_id: str, index: str | None) -> None:
        answer = self.web.ask({"op": "run", "run_id": run_id})
        run = answer.get("run") if answer.get("ok") else None
        if run is None:
            self._send(HTTPStatus.NOT_FOUND, b"no such run\n")
            return
        images = run_images(run.get("result") or {})
        if index is None:
            self._json([{"index": i, "name": p.name} for i, p in enumerate(images)])
            return
        if int(index) >= len(images):
            self._send(HTTPStatus.NOT_FOUND, b"no such image\n")
            return
        path = images[int(index)]
        with path.open("rb") as fh:
            data = fh.read(IMAGE_MAX_BYTES + 1)
        if len(data) > IMAGE_MAX_BYTES:
            self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"image too large\n")
            return
        self._send(HTTPStatus.OK, data, "image/png")

    # ------------------------------------------------------------ answers

    def _unavailable(self, answer: dict[str, Any]) -> None:
        text = f"the daemon did not answer: {answer.get('error')}\n"
        self._send(HTTPStatus.SERVICE_UNAVAILABLE, text.encode())

    def _json(self, data: Any) -> None:
        self._send(HTTPStatus.OK, json.dumps(data).encode(), "application/json")

    def _headers(self) -> None:
        for key, value in HEADERS.items():
            self.send_header(key, value)

    def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self._headers()
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
