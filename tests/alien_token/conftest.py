"""Fixtures for the AliEnToken tests: a real sshd on loopback, token paths, manifests.

The sshd is Debian's openssh-server (scripts/sshd-deps.sh installs it), started privately for
the test session: its own host key, configuration, authorized_keys and pid file under a
temporary directory, listening on a free 127.0.0.1 port, key authentication only. Clients reach
it through an ssh config (``ssh -F``) with several host aliases, and a known_hosts file the
fixture writes from the host key, so ``StrictHostKeyChecking yes`` holds. One more alias points
at a port that is bound but never listens: connections to it are refused (a host that is down).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require

HERE = Path(__file__).resolve().parent
FAKE_INIT = HERE / "bin" / "fake-alien-token-init"
FAKE_ALIENV = HERE / "bin" / "fake-alienv"
SSHD = "/usr/sbin/sshd"
GOOD_HOSTS = ["login01", "login02", "login03"]
DOWN_HOST = "login04"


@dataclass
class LoopbackSshd:
    root: Path
    port: int
    closed_port: int
    client_key: Path
    known_hosts: Path
    user: str

    def write_config(self, path: Path, down: list[str] | None = None) -> Path:
        """An ssh client config: GOOD_HOSTS (and any alias not in ``down``) reach the sshd;
        the aliases in ``down`` point at the closed port."""
        down = [DOWN_HOST] if down is None else down
        up = [h for h in [*GOOD_HOSTS, DOWN_HOST] if h not in down]
        blocks = []
        if up:
            blocks.append(f"Host {' '.join(up)}\n  HostName 127.0.0.1\n  Port {self.port}\n")
        if down:
            blocks.append(
                f"Host {' '.join(down)}\n  HostName 127.0.0.1\n  Port {self.closed_port}\n"
            )
        blocks.append(
            "Host *\n"
            f"  User {self.user}\n"
            f"  IdentityFile {self.client_key}\n"
            "  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n"
            "  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n"
            "  LogLevel ERROR\n"
        )
        path.write_text("".join(blocks))
        return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        timeout=30,
        capture_output=True,
    )


def _banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            return s.recv(64).startswith(b"SSH-2.0")
    except OSError:
        return False


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSshd]:
    require(
        os.access(SSHD, os.X_OK) and shutil.which("ssh") is not None,
        "openssh-server and openssh-client (run scripts/sshd-deps.sh as root)",
    )
    require(shutil.which("ssh-keygen") is not None, "ssh-keygen (openssh-client)")
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        # Debian creates sshd's privilege-separation directory when the service starts; the
        # package install here never starts it.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    root = tmp_path_factory.mktemp("sshd")
    host_key, client_key = root / "host_ed25519", root / "client_ed25519"
    _keygen(host_key)
    _keygen(client_key)
    (root / "authorized_keys").write_text((root / "client_ed25519.pub").read_text())
    os.chmod(root / "authorized_keys", 0o600)
    port = _free_port()
    # Bound, never listening: the kernel refuses connections to it, as to a host that is down.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = int(closed.getsockname()[1])
    user = pwd.getpwuid(os.getuid()).pw_name
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {host_key}\n"
        f"PidFile {root / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        # The key files live under /tmp, which is world-writable: StrictModes would refuse.
        "StrictModes no\n"
        "PermitRootLogin prohibit-password\n"
        f"AllowUsers {user}\n"
        "MaxStartups 64:30:128\n"
        # sftp for sshfs (a network file system for the state-directory tests)
        "Subsystem sftp internal-sftp\n"
        "LogLevel VERBOSE\n"
    )
    check = subprocess.run(
        [SSHD, "-t", "-f", str(config)], capture_output=True, text=True, timeout=30
    )
    require(check.returncode == 0, f"a usable sshd (sshd -t says: {check.stderr.strip()})")
    log = open(root / "sshd.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + 10
    while not _banner(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"sshd did not start:\n{(root / 'sshd.log').read_text()}")
        time.sleep(0.05)
    key_type, key_b64 = (root / "host_ed25519.pub").read_text().split()[:2]
    known_hosts = root / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {key_type} {key_b64}\n")
    try:
        yield LoopbackSshd(root, port, closed_port, client_key, known_hosts, user)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        closed.close()


def init_command(
    cert: Path,
    key: Path,
    lifetime_s: float = 2 * 86400,
    mode: str = "ok",
    calls: Path | None = None,
) -> list[str]:
    """argv of the stand-in alien-token-init (see bin/fake-alien-token-init)."""
    argv = [sys.executable, str(FAKE_INIT), "--cert", str(cert), "--key", str(key)]
    argv += ["--lifetime", str(lifetime_s), "--mode", mode]
    if calls is not None:
        argv += ["--calls", str(calls)]
    return argv


def manifest_dict(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "orchestrator/v1", "kind": "AliEnToken", "name": name, "spec": spec}


@dataclass
class TaskRun:
    returncode: int
    stdout: str
    stderr: str
    result: dict[str, Any]


def run_task(
    tmp_path: Path, spec: dict[str, Any], name: str = "token", env: dict[str, str] | None = None
) -> TaskRun:
    """Run ``python -m orchestrator.tasks.alien_token`` as the daemon would (manifest and
    result files, ORCH_STATE_DIR, ORCH_JOB)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    (run_dir / "manifest.json").write_text(json.dumps(manifest_dict(name, spec)))
    result_path = run_dir / "task-result.json"
    result_path.unlink(missing_ok=True)
    full_env = dict(os.environ)
    full_env.update(
        {
            "ORCH_TASK_MANIFEST": str(run_dir / "manifest.json"),
            "ORCH_TASK_RESULT": str(result_path),
            "ORCH_STATE_DIR": str(tmp_path / "state"),
            "ORCH_JOB": name,
            "ORCH_RUN_ID": "test",
        }
    )
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.tasks.alien_token"],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    return TaskRun(proc.returncode, proc.stdout, proc.stderr, result)
