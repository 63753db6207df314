"""The ``notify:`` block of a manifest and of the daemon-wide configuration file.

    notify:
      on: [failure, recovery, alert, overdue]     # the default: all four
      urls:                                       # Apprise URLs; ${VAR} from the daemon's env
        - mailto://ops:${SMTP_PASSWORD}@smtp.example.org?to=oncall@example.org
        - ntfy://ntfy.example.org/o2-nightly

A manifest's block overrides the daemon-wide one field by field: a field the manifest leaves
out is the daemon's (``orchestrator.toml``'s ``[notify]``), so a manifest can change only
``on`` and keep the group's addresses; ``on: []`` silences a job.

A URL is a secret (a password, a webhook token): it is never echoed in an error message, a
log line, ``status`` or history; where one must be named it is :func:`redact`-ed to its scheme
and host.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field

from orchestrator.manifests.fields import StrictModel

EVENTS = ("failure", "recovery", "alert", "overdue")
NotifyEvent = Literal["failure", "recovery", "alert", "overdue"]
DEFAULT_LOG_LINES = 20

# ${NAME}: a variable of the daemon's environment (a systemd EnvironmentFile=, say), read when
# a message is sent, so that a manifest can be shared without its secrets.
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.IGNORECASE)


def _check_url(value: str) -> str:
    # The message names the scheme only: the rest of a URL may be a password or a token.
    match = _SCHEME.match(value.strip())
    if match is None:
        raise ValueError(
            "not a notification URL: Apprise's form is SCHEME://..., e.g. mailto://, "
            "slack://, mmost://, ntfy://, json:// (https://github.com/caronc/apprise/wiki)"
        )
    if VARIABLE.search(value):
        return value.strip()  # checked when sent, with the variables filled in
    import apprise

    quiet_apprise()
    if apprise.Apprise.instantiate(value.strip()) is None:
        raise ValueError(
            f"not a {match.group(1)}:// URL that Apprise accepts (an unknown scheme or a "
            "missing part; the URL is not repeated here as it may hold a secret): see "
            "https://github.com/caronc/apprise/wiki for the form of each service"
        )
    return value.strip()


NotifyUrl = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_check_url)]


class Notify(StrictModel):
    """Where and when a job's transitions are announced."""

    on: list[NotifyEvent] | None = Field(
        None,
        description="which transitions send a message: failure (a run failed, timed out or "
        "was lost, after its retries), recovery (the first success after a problem), alert "
        "(a task result raised one: a token inside alert_before, a stale O2 pointer), "
        "overdue (expect.success_within passed); default: the daemon's, else all four",
    )
    urls: list[NotifyUrl] | None = Field(
        None,
        description="Apprise URLs (mailto://, slack://, mmost://, ntfy://, json://, ...); "
        "${VAR} is read from the daemon's environment when a message is sent; default: the "
        "daemon's (orchestrator.toml [notify])",
    )
    log_lines: int | None = Field(
        None,
        ge=0,
        le=200,
        description=f"log lines in a failure message (default {DEFAULT_LOG_LINES})",
    )


class Effective(StrictModel):
    """A job's notification settings once the manifest's block and the daemon's are merged."""

    on: tuple[NotifyEvent, ...] = ("failure", "recovery", "alert", "overdue")
    urls: tuple[str, ...] = ()
    log_lines: int = DEFAULT_LOG_LINES

    @property
    def active(self) -> bool:
        return bool(self.on and self.urls)


def effective(job: Notify | None, daemon: Notify | None) -> Effective:
    """The manifest's fields where given, else the daemon's, else the defaults."""

    def pick(name: str, default: object) -> object:
        for block in (job, daemon):
            value = getattr(block, name, None) if block is not None else None
            if value is not None:
                return value
        return default

    return Effective(
        on=tuple(pick("on", EVENTS)),  # type: ignore[arg-type]
        urls=tuple(pick("urls", ())),  # type: ignore[arg-type]
        log_lines=pick("log_lines", DEFAULT_LOG_LINES),
    )


def quiet_apprise() -> None:
    """Keep Apprise's own log lines (which may name parts of a URL) out of the daemon's log
    and the terminal: delivery captures and scrubs them per attempt (deliver.py)."""
    import logging

    logger = logging.getLogger("apprise")
    logger.propagate = False
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


def redact(url: str) -> str:
    """A URL as it may be shown: its scheme and host, nothing that can be a secret (user,
    password, path, query: a Slack or webhook token lives in any of them). Where the host
    itself is a token (slack://TOKEN/...), Apprise's privacy form of it."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an unreadable URL)"
    scheme = parts.scheme or "?"
    if VARIABLE.search(host) or not host:
        host = "…"
    elif not _looks_like_host(host):
        host = f"{host[:1]}…{host[-1:]}"
    rest = "/…" if (parts.path.strip("/") or parts.query or parts.username) else ""
    return f"{scheme}://{host}{port}{rest}"


def _looks_like_host(host: str) -> bool:
    """A DNS name or an address, not a token: has a dot or a colon, or is localhost."""
    return host == "localhost" or "." in host or ":" in host


def secrets_of(url: str) -> list[str]:
    """The parts of a URL that may be secret, longest first, for scrubbing a library's log
    text: user, password, path segments, query values and a host that is not a host name."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return [url]
    found = [parts.username or "", parts.password or ""]
    found += parts.path.split("/")
    for pair in parts.query.split("&"):
        found.append(pair.partition("=")[2])
    host = parts.hostname or ""
    if host and not _looks_like_host(host):
        found.append(host)
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def scrub(text: str, urls: tuple[str, ...] | list[str]) -> str:
    """``text`` with every secret part of ``urls`` replaced by ``***``."""
    for url in urls:
        text = text.replace(url, redact(url))
        for secret in secrets_of(url):
            text = text.replace(secret, "***")
    return text


def notify_digest(block: Notify | None) -> str:
    """A digest of a notify block: tells that it changed without showing its URLs."""
    import hashlib
    import json

    text = json.dumps(block.model_dump(mode="json") if block else None, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
