"""Copies of the token on this machine's file systems, and the env file batch jobs source.

Every file is written to a temporary file in the target directory (mode 0600 from the start,
``mkstemp``), flushed to disk, then renamed over the old one: a reader sees the old file or the
new one, never a half-written token, and nobody else can read it at any moment.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from orchestrator import atomic


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> bool:
    """Write ``data`` to ``path`` atomically; False when it already held exactly that."""
    try:
        st = path.stat()
        if (st.st_mode & 0o777) == mode and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    atomic.write_bytes(path, data, mode)
    return True


@dataclass(frozen=True)
class TokenFiles:
    """The token's bytes and the file names its copies get."""

    cert: bytes
    key: bytes
    cert_name: str
    key_name: str


def copy_to_directory(directory: Path, token: TokenFiles) -> tuple[Path, Path]:
    """Put the key, then the certificate, into ``directory`` (created 0700 when missing).
    Raises OSError."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_path = directory / token.key_name
    cert_path = directory / token.cert_name
    atomic_write(key_path, token.key)
    atomic_write(cert_path, token.cert)
    return cert_path, key_path


def env_file_text(cert: Path, key: Path, debug_file: str, job: str, not_after: str) -> str:
    """The env file: sh syntax (``. FILE`` from bash, sh or zsh), values quoted literally."""
    lines = [
        f"# Written by orchestrator job {job}; token valid until {not_after}.",
        "# Source it from batch jobs: . FILE",
        f"export JALIEN_TOKEN_CERT={shlex.quote(str(cert))}",
        f"export JALIEN_TOKEN_KEY={shlex.quote(str(key))}",
        f"export ALIENPY_DEBUG_FILE={shlex.quote(debug_file)}",
    ]
    return "\n".join(lines) + "\n"
