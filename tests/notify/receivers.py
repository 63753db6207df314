"""Real receivers on loopback for notification tests: an SMTP server (aiosmtpd) that requires
a login, and an HTTP server that takes Apprise's json:// webhooks (and can refuse the first
ones, as a receiver that is down does)."""

from __future__ import annotations

import email
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SMTP_USER = "ops"
SMTP_PASSWORD = "Sm7pPassw0rd-notInLogs"
HOOK_TOKEN = "HookToken-d41d8cd98f00b204"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Mailbox:
    """What the SMTP server received, and the URL that sends to it."""

    port: int
    messages: list[Message] = field(default_factory=list)
    logins: list[bool] = field(default_factory=list)

    @property
    def url(self) -> str:
        return (
            f"mailto://{SMTP_USER}:{SMTP_PASSWORD}@localhost:{self.port}"
            "?to=oncall@example.org&from=orchestrator@example.org"
        )

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.messages]

    def bodies(self) -> list[str]:
        out = []
        for m in self.messages:
            part = next((p for p in m.walk() if p.get_content_type() == "text/plain"), m)
            payload = part.get_payload(decode=True)
            out.append(payload.decode("utf-8", "replace") if isinstance(payload, bytes) else "")
        return out


@contextmanager
def smtp_server() -> Iterator[Mailbox]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    box = Mailbox(free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            box.messages.append(email.message_from_bytes(envelope.original_content))
            return "250 OK"

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == SMTP_USER.encode()
            and data.password == SMTP_PASSWORD.encode()
        )
        box.logins.append(ok)
        return AuthResult(success=ok)

    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=box.port,
        authenticator=authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@dataclass
class Hook:
    """What the webhook received: (path, JSON body) pairs; ``refuse`` answers 503 to the next
    that many requests."""

    port: int
    posts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    refused: int = 0
    refuse: int = 0

    def url(self, token: str = "${HOOK_TOKEN}") -> str:
        return f"json://127.0.0.1:{self.port}/hook/{token}"

    def titles(self) -> list[str]:
        return [str(body.get("title")) for _, body in self.posts]


@contextmanager
def http_hook() -> Iterator[Hook]:
    hook = Hook(free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if hook.refuse > 0:
                hook.refuse -= 1
                hook.refused += 1
                self.send_response(503)
                self.end_headers()
                return
            hook.posts.append((self.path, json.loads(body or b"{}")))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", hook.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
