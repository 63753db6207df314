"""Token certificates with chosen lifetimes, made with ``cryptography``.

A stand-in for what JAliEn's token service issues (it cannot be reached from here): a
self-signed certificate and an unencrypted key, written where alien-token-init writes them.
EC keys instead of RSA keep the tests fast; the task only reads notAfter and matches the key.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def make_token(cert_path: Path, key_path: Path, lifetime_s: float, cn: str = "jalien") -> datetime:
    """Write a certificate valid for ``lifetime_s`` from now (negative: already expired) and
    its key, mode 0600; returns notAfter (whole seconds, UTC)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC).replace(microsecond=0)
    not_after = now + timedelta(seconds=lifetime_s)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(min(now, not_after) - timedelta(days=1))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    for path, data in (
        (
            key_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            ),
        ),
        (cert_path, cert.public_bytes(serialization.Encoding.PEM)),
    ):
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    return not_after


def not_after_of(cert_path: Path) -> datetime:
    return x509.load_pem_x509_certificate(cert_path.read_bytes()).not_valid_after_utc
