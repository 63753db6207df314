"""What a token is worth, read from the certificate itself.

``alien-token-info`` exits 0 for any readable token, even an expired one (2: missing, 5:
unparsable), so its exit status says nothing about validity; the certificate's notAfter does.
Nothing here returns or logs the token's contents.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from orchestrator.tasks.alien_token.spec import CLIENT_MIN_VALID_S


def expand_path(text: str) -> Path:
    """``~``, ``$UID`` (the numeric user id; bash does not export it) and ``$VAR``/``${VAR}``."""
    text = re.sub(r"\$(UID\b|\{UID\})", str(os.getuid()), text)
    return Path(os.path.expanduser(os.path.expandvars(text)))


@dataclass(frozen=True)
class TokenState:
    """The token at a pair of paths: ``problem`` says why it is unusable (None: it is usable)."""

    cert_path: Path
    key_path: Path
    not_after: datetime | None
    problem: str | None
    fingerprint: str = ""  # SHA-256 of the certificate (public data), "" without one

    def seconds_left(self, now: datetime) -> float | None:
        if self.not_after is None:
            return None
        return (self.not_after - now).total_seconds()

    def accepted_by_clients(self, now: datetime) -> bool:
        left = self.seconds_left(now)
        return self.problem is None and left is not None and left >= CLIENT_MIN_VALID_S


def read_token(cert_path: Path, key_path: Path) -> TokenState:
    """Read notAfter from the certificate and check that the key belongs to it."""
    try:
        cert_bytes = cert_path.read_bytes()
    except FileNotFoundError:
        return TokenState(cert_path, key_path, None, f"no token certificate at {cert_path}")
    except OSError as exc:
        return TokenState(cert_path, key_path, None, f"cannot read {cert_path}: {exc.strerror}")
    try:
        cert = x509.load_pem_x509_certificate(cert_bytes)
    except ValueError:
        return TokenState(cert_path, key_path, None, f"{cert_path} is not a PEM certificate")
    not_after = cert.not_valid_after_utc
    fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    try:
        key_bytes = key_path.read_bytes()
    except FileNotFoundError:
        return TokenState(
            cert_path, key_path, not_after, f"no token key at {key_path}", fingerprint
        )
    except OSError as exc:
        return TokenState(
            cert_path, key_path, not_after, f"cannot read {key_path}: {exc.strerror}", fingerprint
        )
    try:
        key = serialization.load_pem_private_key(key_bytes, password=None)
    except (ValueError, TypeError):
        # TypeError: the key is encrypted. A token key never is; clients could not use it.
        return TokenState(
            cert_path,
            key_path,
            not_after,
            f"{key_path} is not an unencrypted PEM private key",
            fingerprint,
        )
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ) != cert.public_key().public_bytes(serialization.Encoding.DER, spki):
        return TokenState(
            cert_path,
            key_path,
            not_after,
            f"{key_path} does not belong to {cert_path}",
            fingerprint,
        )
    return TokenState(cert_path, key_path, not_after, None, fingerprint)


def format_left(seconds: float | None) -> str:
    """``1d 3h 20m`` / ``12m 5s`` / ``expired 2h 1m ago``; for humans, in messages."""
    if seconds is None:
        return "no token"
    if seconds < 0:
        return f"expired {format_left(-seconds)} ago"
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m")] if total >= 3600 else []
    if not parts:
        parts = [(minutes, "m"), (secs, "s")]
    text = " ".join(f"{n}{unit}" for n, unit in parts if n)
    return text or "0s"


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
