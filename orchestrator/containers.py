"""Container runtime command lines: one pure function, ``render_command``, for every job kind.

The result is always an argv list (never a shell string) and the environment to run it with, so
a run can be replayed by hand from what the orchestrator logs. With a container, ``workdir`` is
a directory INSIDE the container (rendered as the runtime's workdir flag); the runtime itself
should then be started without a host working directory of that name.

Runtimes (only podman runs on the development machines; the others are rendered and unit-tested
against their documented command lines):

- ``shifter`` (NERSC)::

      shifter --image=IMG --volume=SRC:DST[:ro] --workdir=DIR [extra_args] -- ARGV...

  Flag names from NERSC/shifter ``src/shifter.c`` (``parse_options``: ``image``, ``volume``,
  ``workdir``; ``:ro`` is a volume flag, ``udiRoot/src/VolumeMap.c``). Shifter copies the
  caller's environment into the container (``shifter_copyenv`` then ``execvpe`` with it), while
  its ``--env`` option is declared without an argument and ignored upstream ("TODO" in
  ``parse_options``); so the container env is passed in the process environment, which works on
  every shifter version.
- ``podman-hpc`` (NERSC) and ``podman``::

      podman-hpc run --rm -v SRC:DST[:ro] -e K=V -w DIR [extra_args] IMAGE ARGV...

  On the development machines rootful podman needs ``--runtime runc`` (the default crun fails on
  their hybrid cgroups); that is a global podman option, placed before ``run``, and the user
  passes it in ``extra_args``: leading ``extra_args`` that are podman global options
  (``--runtime``, ``--root``, ``--runroot``, ``--storage-driver``, ``--cgroup-manager``,
  ``--log-level``) are moved before ``run``; the rest go after the run flags.
- ``docker`` (workstations, the CodeRefinery course's examples)::

      docker [global options] run --rm -v SRC:DST[:ro] -e K=V -w DIR [extra_args] IMAGE ARGV...

  As podman, with docker's own global options (``--host``/``-H``, ``--context``,
  ``--config``, ``--log-level``) moved before ``run``; ``DOCKER_HOST`` in the run's environment
  works too. The docker client proxies SIGTERM to the container (the run's timeout and cancel);
  a container that ignores it outlives the client's SIGKILL, so give long-running images an
  init (``extra_args: [--init]``).
- ``apptainer``::

      apptainer exec --bind SRC:DST[:ro] --env K=V --pwd DIR [extra_args] IMAGE ARGV...

  ``--env`` and ``--bind`` split their value on commas (apptainer/singularity issue #6088), so a
  value containing a comma is passed as ``APPTAINERENV_K`` in the process environment instead
  (apptainer's documented prefix), and a bind path with a comma is refused.
- ``none`` or no container: argv and env unchanged.
"""

from __future__ import annotations

from orchestrator.manifests.fields import Container, Mount

__all__ = ["PODMAN_GLOBAL_OPTIONS", "render_command"]

# docker's options that must come before `run` (`docker -H unix:///x.sock run ...`)
DOCKER_GLOBAL_OPTIONS = ("--host", "-H", "--context", "-c", "--config", "--log-level", "-l")

# podman options that must come before the subcommand (`podman --runtime runc run ...`).
PODMAN_GLOBAL_OPTIONS = (
    "--runtime",
    "--root",
    "--runroot",
    "--storage-driver",
    "--cgroup-manager",
    "--log-level",
    "--events-backend",
)


def _check_mount_path(runtime: str, mount: Mount) -> None:
    for path in (mount.source, mount.target):
        if ":" in path:
            raise ValueError(
                f"{runtime}: mount path {path!r} contains ':', which the runtime reads as a "
                "separator; use a path (or a symlink) without ':'"
            )
        if runtime == "apptainer" and "," in path:
            raise ValueError(
                f"apptainer: bind path {path!r} contains ',', which --bind reads as a separator"
            )


def _mount_spec(mount: Mount, env: dict[str, str] | None = None) -> str:
    """``source:target[:ro]``; ``~`` and ``$VARS`` in the host-side source are expanded from
    the run's environment (``$SCRATCH``, ``$CFS`` on Perlmutter), as the workdir is, because
    the argv reaches the runtime without a shell."""
    return f"{expand_host_path(mount.source, env)}:{mount.target}" + (
        ":ro" if mount.readonly else ""
    )


def expand_host_path(path: str, env: dict[str, str] | None = None) -> str:
    """Expand ``~`` and ``$VAR``/``${VAR}`` from ``env`` (default: this process's); unknown
    variables stay as written, so the runtime's error names them."""
    import os
    import re

    values = os.environ if env is None else env

    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, match.group(0))

    expanded = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", sub, path)
    if expanded.startswith("~"):
        home = values.get("HOME") or os.path.expanduser("~")
        if expanded == "~" or expanded.startswith("~/"):
            expanded = home + expanded[1:]
    return expanded


def _split_globals(
    extra_args: list[str], global_options: tuple[str, ...]
) -> tuple[list[str], list[str]]:
    """Leading global options (with their values) and the remaining run options."""
    globals_: list[str] = []
    i = 0
    while i < len(extra_args):
        arg = extra_args[i]
        name = arg.split("=", 1)[0]
        if name not in global_options:
            break
        if "=" in arg:
            globals_.append(arg)
            i += 1
        else:
            globals_.extend(extra_args[i : i + 2])
            i += 2
    return globals_, list(extra_args[i:])


def render_command(
    container: Container | None,
    argv: list[str],
    env: dict[str, str],
    workdir: str | None,
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run ``argv`` in ``container`` (see the module docstring).

    ``env`` is the full process environment; ``container.env`` is what the process inside the
    container additionally gets. Returns new objects; the arguments are not modified. Raises
    ``ValueError`` for a mount path the runtime cannot express.
    """
    argv = list(argv)
    env = dict(env)
    if container is None or container.runtime == "none":
        return argv, env
    image = container.image
    assert image is not None  # Container's validator requires it for every real runtime
    runtime = container.runtime
    for mount in container.mounts:
        _check_mount_path(runtime, mount)

    render = _RENDERERS.get(runtime)
    if render is None:  # pragma: no cover - the model's Literal lists the runtimes
        raise ValueError(f"unknown container runtime {runtime!r}")
    return render(container, image, argv, env, workdir)


def _shifter(
    container: Container, image: str, argv: list[str], env: dict[str, str], workdir: str | None
) -> tuple[list[str], dict[str, str]]:
    cmd = ["shifter", f"--image={image}"]
    cmd += [f"--volume={_mount_spec(m, env)}" for m in container.mounts]
    if workdir is not None:
        cmd.append(f"--workdir={workdir}")
    cmd += container.extra_args
    env.update(container.env)
    return [*cmd, "--", *argv], env


def _podman(
    container: Container, image: str, argv: list[str], env: dict[str, str], workdir: str | None
) -> tuple[list[str], dict[str, str]]:
    # podman, podman-hpc and docker share the run line; each has its own global options
    names = DOCKER_GLOBAL_OPTIONS if container.runtime == "docker" else PODMAN_GLOBAL_OPTIONS
    global_opts, run_opts = _split_globals(container.extra_args, names)
    cmd = [container.runtime, *global_opts, "run", "--rm"]
    for m in container.mounts:
        cmd += ["-v", _mount_spec(m, env)]
    for key, value in container.env.items():
        cmd += ["-e", f"{key}={value}"]
    if workdir is not None:
        cmd += ["-w", workdir]
    cmd += run_opts
    return [*cmd, image, *argv], env


def _apptainer(
    container: Container, image: str, argv: list[str], env: dict[str, str], workdir: str | None
) -> tuple[list[str], dict[str, str]]:
    cmd = ["apptainer", "exec"]
    for m in container.mounts:
        cmd += ["--bind", _mount_spec(m, env)]
    for key, value in container.env.items():
        if "," in value:
            env[f"APPTAINERENV_{key}"] = value
        else:
            cmd += ["--env", f"{key}={value}"]
    if workdir is not None:
        cmd += ["--pwd", workdir]
    cmd += container.extra_args
    return [*cmd, image, *argv], env


_RENDERERS = {
    "shifter": _shifter,
    "podman": _podman,
    "podman-hpc": _podman,
    "docker": _podman,
    "apptainer": _apptainer,
}
