"""container.runtime: docker, rendered and run for real: Debian's docker.io daemon, started
by this test with its own socket, data root and no network (vfs storage, no iptables), runs
the rendered command in an image imported from a static busybox."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.containers import render_command
from orchestrator.manifests.fields import Container
from tests.conftest import require
from tests.unit.test_containers import busybox_rootfs

pytestmark = pytest.mark.slow


def test_docker_command_line_puts_global_options_first() -> None:
    c = Container.model_validate(
        {
            "runtime": "docker",
            "image": "alma:9",
            "mounts": ["/d:/d:ro"],
            "env": {"A": "1"},
            "extra_args": ["-H", "unix:///x.sock", "--network=none"],
        }
    )
    argv, _ = render_command(c, ["make"], {}, "/d")
    assert argv == [
        "docker", "-H", "unix:///x.sock", "run", "--rm", "-v", "/d:/d:ro", "-e", "A=1",
        "-w", "/d", "--network=none", "alma:9", "make",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private docker daemon (root only); its socket's URL. Stopped by its pid."""
    require(
        shutil.which("dockerd") is not None and shutil.which("docker") is not None,
        "Debian's docker.io (scripts/system-deps.sh installs it as root)",
    )
    require(os.geteuid() == 0, "root, to start a docker daemon")
    root = tmp_path_factory.mktemp("dockerd")
    sock = root / "docker.sock"
    log = (root / "dockerd.log").open("w")
    proc = subprocess.Popen(
        [
            "dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none",
            "--storage-driver=vfs", f"--data-root={root / 'data'}",
            f"--exec-root={root / 'exec'}", f"--pidfile={root / 'dockerd.pid'}",
            "-H", f"unix://{sock}",
        ],
        stdout=log, stderr=log,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ok = subprocess.run(
                ["docker", "-H", f"unix://{sock}", "info"], capture_output=True, timeout=30
            )
            if ok.returncode == 0:
                break
            if proc.poll() is not None:
                pytest.fail("dockerd exited:\n" + (root / "dockerd.log").read_text()[-3000:])
            time.sleep(0.5)
        else:
            pytest.fail("dockerd did not answer:\n" + (root / "dockerd.log").read_text()[-3000:])
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def test_docker_really_runs_the_rendered_command(dockerd: str, tmp_path: Path) -> None:
    tarball = busybox_rootfs(tmp_path, ("sh", "echo", "pwd", "cat"))
    subprocess.run(
        ["docker", "-H", dockerd, "import", str(tarball), "orch-test-busybox:latest"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    data = tmp_path / "data"
    data.mkdir()
    (data / "hello.txt").write_text("from the host\n")
    c = Container.model_validate(
        {
            "runtime": "docker",
            "image": "orch-test-busybox:latest",
            "mounts": [f"{data}:/data:ro"],
            "env": {"GREETING": "hello 'big' world"},
            "extra_args": ["-H", dockerd, "--network=none"],
        }
    )
    script = 'echo "$GREETING"; pwd; cat /data/hello.txt; echo x > /data/new || echo read-only'
    argv, env = render_command(c, ["sh", "-c", script], {"PATH": os.environ["PATH"]}, "/data")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == ["hello 'big' world", "/data", "from the host"]
    assert lines[-1] == "read-only"
