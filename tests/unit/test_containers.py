"""Container command lines: each runtime's argv, values kept whole, one real podman run."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from orchestrator.containers import render_command
from orchestrator.manifests.models import Container
from tests.conftest import require

ARGV = ["python", "-c", "print('a b')", "--flag with space"]
BASE_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/home/u"}


def container(runtime: str, **kwargs: object) -> Container:
    return Container.model_validate({"runtime": runtime, "image": "img:1", **kwargs})


FULL = {
    "mounts": ["/data:/data:ro", {"source": "/scratch/a b", "target": "/work"}],
    "env": {"GREETING": "hello \"big\" 'world'", "N": 4},
}


def test_no_container_or_runtime_none_leaves_the_command_unchanged() -> None:
    """Without a container (or with runtime none) argv and env come back unchanged as copies."""
    for c in (None, Container(runtime="none")):
        argv, env = render_command(c, ARGV, BASE_ENV, "/w")
        assert argv == ARGV
        assert env == BASE_ENV
        assert argv is not ARGV
        assert env is not BASE_ENV


def test_shifter_command_line() -> None:
    """shifter: --image, --volume (with :ro), --workdir, extra args, then -- and the argv."""
    argv, env = render_command(
        container("shifter", extra_args=["--module=gpu"], **FULL), ARGV, BASE_ENV, "/work"
    )
    assert argv == [
        "shifter",
        "--image=img:1",
        "--volume=/data:/data:ro",
        "--volume=/scratch/a b:/work",
        "--workdir=/work",
        "--module=gpu",
        "--",
        *ARGV,
    ]
    # shifter copies the caller's environment into the container: env goes there.
    assert env == {**BASE_ENV, "GREETING": "hello \"big\" 'world'", "N": "4"}


def test_podman_hpc_command_line() -> None:
    """podman-hpc: run --rm -v -e -w [extra] IMAGE argv, each value one argv element."""
    argv, env = render_command(
        container("podman-hpc", extra_args=["--gpu"], **FULL), ARGV, BASE_ENV, "/work"
    )
    assert argv == [
        "podman-hpc",
        "run",
        "--rm",
        "-v",
        "/data:/data:ro",
        "-v",
        "/scratch/a b:/work",
        "-e",
        "GREETING=hello \"big\" 'world'",
        "-e",
        "N=4",
        "-w",
        "/work",
        "--gpu",
        "img:1",
        *ARGV,
    ]
    assert env == BASE_ENV


def test_podman_global_options_go_before_run() -> None:
    """podman: `--runtime runc` from extra_args is a global option, placed before `run`."""
    argv, _ = render_command(
        container("podman", extra_args=["--runtime", "runc", "--network=none"]),
        ["true"],
        BASE_ENV,
        None,
    )
    assert argv == ["podman", "--runtime", "runc", "run", "--rm", "--network=none", "img:1", "true"]


def test_apptainer_command_line() -> None:
    """apptainer: exec --bind --env --pwd [extra] IMAGE argv."""
    argv, env = render_command(
        container("apptainer", extra_args=["--nv"], **FULL), ARGV, BASE_ENV, "/work"
    )
    assert argv == [
        "apptainer",
        "exec",
        "--bind",
        "/data:/data:ro",
        "--bind",
        "/scratch/a b:/work",
        "--env",
        "GREETING=hello \"big\" 'world'",
        "--env",
        "N=4",
        "--pwd",
        "/work",
        "--nv",
        "img:1",
        *ARGV,
    ]
    assert env == BASE_ENV


def test_apptainer_values_with_commas_go_through_the_environment() -> None:
    """apptainer --env splits on commas, so such a value is passed as APPTAINERENV_<NAME>."""
    argv, env = render_command(
        container("apptainer", env={"LDFLAGS": "-Wl,-rpath,/opt/lib"}), ["true"], BASE_ENV, None
    )
    assert "--env" not in argv
    assert env["APPTAINERENV_LDFLAGS"] == "-Wl,-rpath,/opt/lib"


def test_mount_paths_the_runtime_cannot_express_are_refused() -> None:
    """A mount path containing ',' for apptainer raises ValueError naming it (one with ':' is
    already refused by the manifest model: see test_mount_path_with_colon_is_a_manifest_error)."""
    bad = container("apptainer", mounts=[{"source": "/a,b", "target": "/x"}])
    with pytest.raises(ValueError, match="/a,b"):
        render_command(bad, ["true"], BASE_ENV, None)


def _is_static_elf(path: Path) -> bool:
    """True for a 64-bit ELF executable without a PT_INTERP program header (no dynamic loader)."""
    import struct

    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return all(struct.unpack_from("<I", data, phoff + i * phentsize)[0] != 3 for i in range(phnum))


def busybox_rootfs(tmp_path: Path, applets: tuple[str, ...]) -> Path:
    """A root file system tarball holding busybox-static and links for ``applets`` (any
    runtime imports it as an image)."""
    busybox = shutil.which("busybox")
    require(
        busybox is not None and _is_static_elf(Path(busybox)),
        "a static busybox (Debian package busybox-static) to build a test image",
    )
    assert busybox is not None
    tarball = tmp_path / "rootfs.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for applet in applets:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
    return tarball


def _busybox_image(tmp_path: Path) -> str:
    """Import a one-file image holding busybox-static; return its name."""
    tarball = busybox_rootfs(tmp_path, ("sh", "echo", "pwd", "env"))
    return import_image(tarball, "localhost/orch-test-busybox:latest")


def import_image(tarball: Path, name: str) -> str:
    """A root file system tarball imported as the podman image ``name`` (returned)."""
    subprocess.run(
        ["podman", "--runtime", "runc", "import", str(tarball), name],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return name


@pytest.mark.slow
def test_podman_really_runs_the_rendered_command(tmp_path: Path) -> None:
    """The rendered podman argv runs a real container: env, workdir and a read-only mount work."""
    require(
        shutil.which("podman") is not None and shutil.which("runc") is not None,
        "podman and runc (Debian packages podman, runc; `make test` installs them as root)",
    )
    image = _busybox_image(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (data / "hello.txt").write_text("from the host\n")
    c = Container.model_validate(
        {
            "runtime": "podman",
            "image": image,
            "mounts": [f"{data}:/data:ro"],
            "env": {"GREETING": "hello 'big' world"},
            "extra_args": [
                "--runtime",
                "runc",
                "--network=none",
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
            ],
        }
    )
    script = 'echo "$GREETING"; pwd; cat /data/hello.txt; echo x > /data/new || echo read-only'
    argv, env = render_command(c, ["sh", "-c", script], {"PATH": "/usr/bin:/bin"}, "/data")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == ["hello 'big' world", "/data", "from the host"]
    assert lines[-1] == "read-only"


def test_mount_sources_expand_variables_and_home_from_the_runs_environment() -> None:
    """`$SCRATCH/x` and `~/y` mount sources are expanded from the run's environment (no shell
    will do it); unknown variables stay as written; targets are never expanded."""
    c = Container.model_validate(
        {
            "runtime": "podman-hpc",
            "image": "img",
            "mounts": ["$SCRATCH/data:/data", "${CFS}/m1:/m1:ro", "~/cfg:/cfg", "$NOPE/x:/$T"],
        }
    )
    argv, _ = render_command(c, ["true"], {"SCRATCH": "/s", "CFS": "/c", "HOME": "/h"}, None)
    assert argv[argv.index("-v") + 1] == "/s/data:/data"
    assert "/c/m1:/m1:ro" in argv
    assert "/h/cfg:/cfg" in argv
    assert "$NOPE/x:/$T" in argv


def test_mount_path_with_colon_is_a_manifest_error() -> None:
    """A mapping-form mount whose path holds ':' is refused when the manifest is validated,
    not when a run starts."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Container.model_validate(
            {"runtime": "podman", "image": "i", "mounts": [{"source": "/a:b", "target": "/c"}]}
        )
