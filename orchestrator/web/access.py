"""Who may read the status page and the metrics: anyone who can reach a loopback address,
else only with the token (``ORCH_HTTP_TOKEN``, or one the daemon makes and keeps in
``STATE_DIR/http-token``, mode 0600).

Loopback on a shared login node is reachable by every user of that node: set
``ORCH_HTTP_TOKEN`` to require the token there too. The page never shows a secret and can
change nothing, so the token guards job names, paths and run ids, not control.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import OrchestratorError

TOKEN_ENV = "ORCH_HTTP_TOKEN"
TOKEN_FILE = "http-token"
COOKIE = "orch_token"


class AddressError(OrchestratorError, ValueError):
    """``--http-address`` is not HOST:PORT."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        try:
            infos = socket.getaddrinfo(self.host, None)
        except OSError:
            return False
        return bool(infos) and all(
            ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos
        )


def parse_address(text: str) -> Address:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6; port 0: any free port)."""
    raw = text.strip()
    host, sep, port = raw.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise AddressError(
            f"--http-address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8765 ([::1]:8765 "
            "for IPv6; port 0 picks a free one)"
        )
    return Address(host, int(port))


def token_for(address: Address, state_dir: Path) -> str | None:
    """The token readers must give, or None where none is needed (loopback without
    ``ORCH_HTTP_TOKEN``)."""
    given = os.environ.get(TOKEN_ENV, "").strip()
    if given:
        return given
    if address.loopback:
        return None
    path = state_dir / TOKEN_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def allowed(
    expected: str | None, header: str | None, cookie: str | None, query: str | None
) -> bool:
    """Whether a request carries the token: ``Authorization: Bearer T`` (Prometheus'
    ``authorization: credentials_file``), the page's cookie, or ``?token=T`` once."""
    if expected is None:
        return True
    offered = []
    if header and header.lower().startswith("bearer "):
        offered.append(header[7:].strip())
    offered += [v for v in (cookie, query) if v]
    return any(hmac.compare_digest(v.encode(), expected.encode()) for v in offered)
