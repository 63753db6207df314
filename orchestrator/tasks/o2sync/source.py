"""mode: source — update a work dir (O2/, O2Physics/, alidist/, sw/) and rebuild with aliBuild.

Order of a run, chosen so that a failure leaves the work dir as it was or strictly newer:

1. lock the work dir (two builds never share one; a build orphaned by a killed run counts);
2. check every checkout: a git work tree, no merge/rebase in progress; the package checkout
   on the expected branch with no uncommitted changes to tracked files;
3. fetch every remote (changes nothing the user sees);
4. plan: which repositories will move, and whether a build is due (the heads differ from
   those of the last good build, or ``force_build``); refuse a fast-forward that is not one;
5. when a build is due: check free disk space, before touching any checkout;
6. rebase the user's branch on upstream (a conflict aborts the rebase: the checkout is as it
   was, and the error names the files), then fast-forward O2 and alidist;
7. build: ``aliBuild build PKG -j N --defaults D`` with ``ALIBUILD_WORK_DIR`` in the
   container wrapper, its output in a log of its own; record the heads and the
   ``alienv enter`` line aliBuild printed.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator.containers import render_command
from orchestrator.tasks.o2sync import proc
from orchestrator.tasks.o2sync.context import Context, command_env, say
from orchestrator.tasks.o2sync.errors import O2SyncError
from orchestrator.tasks.o2sync.repos import (
    RepoPlan,
    fast_forward,
    fetch_and_plan,
    rebase,
    repo_plans,
)
from orchestrator.tasks.o2sync.spec import O2SyncSpec
from orchestrator.tasks.o2sync.state import FileLock, JobState, expand_path, now_iso

OOM_NEEDLE = "Killed signal terminated program cc1plus"
BUILD_LOGS_KEPT = 20
_ALIENV = re.compile(r"alienv enter (\S+)")


def _check_disk(path: Path, min_free_gb: float) -> float:
    free_gb = shutil.disk_usage(path).free / 1e9
    if free_gb < min_free_gb:
        raise O2SyncError(
            f"only {free_gb:.1f} GB free under {path}; a build needs min_free_gb={min_free_gb:g}. "
            "Free space (e.g. `aliBuild clean` in the work dir, or old sw/BUILD and sw/TARS "
            "entries) or lower spec.min_free_gb. Nothing was changed or built",
            "low_disk",
            free_gb=round(free_gb, 1),
        )
    return free_gb


def _log_files_named(lines: list[str], workdir: Path) -> Iterator[Path]:
    """aliBuild's 'Log File:' path (printed relative to where it ran) after a failure."""
    for i, line in enumerate(lines[:-1]):
        if line.rstrip().endswith("Log File:"):
            words = lines[i + 1].split()
            if words:
                path = Path(words[-1])
                yield path if path.is_absolute() else workdir / path


def _mentions(path: Path, needle: str) -> bool:
    try:
        with open(path, errors="replace") as fh:
            return any(needle in line for line in fh)
    except OSError:
        return False


def _build_log_path(ctx: Context) -> Path:
    logs = ctx.state_dir / "builds"
    logs.mkdir(parents=True, exist_ok=True)
    for old in sorted(logs.glob("*.log"))[: -(BUILD_LOGS_KEPT - 1) or None]:
        old.unlink(missing_ok=True)
    stamp = now_iso().replace(":", "").replace("+0000", "Z")
    return logs / f"{stamp}-{ctx.run_id or 'manual'}.log"


def _build(
    spec: O2SyncSpec, ctx: Context, workdir: Path, sw: Path, lock: FileLock
) -> dict[str, Any]:
    argv = [
        *spec.alibuild,
        "build",
        spec.package,
        "-j",
        str(spec.jobs),
        "--defaults",
        spec.defaults,
        "-c",
        spec.config_dir,
        *spec.alibuild_args,
    ]
    env = command_env(spec, ALIBUILD_WORK_DIR=str(sw))
    container = spec.container
    if container is not None:
        # podman/apptainer pass only the container's env inside; shifter copies ours anyway.
        container = container.model_copy(
            update={"env": {**container.env, "ALIBUILD_WORK_DIR": str(sw)}}
        )
    in_container = container is not None and container.runtime != "none"
    argv, env = render_command(container, argv, env, str(workdir) if in_container else None)
    log_path = _build_log_path(ctx)
    say(f"build: {' '.join(argv)}  (ALIBUILD_WORK_DIR={sw}; log {log_path})")
    with open(log_path, "w") as log:
        log.write(f"# {now_iso()} {' '.join(argv)}\n# ALIBUILD_WORK_DIR={sw} cwd={workdir}\n")
        try:
            done = proc.run(
                argv,
                timeout_s=spec.build_timeout,
                env=env,
                cwd=workdir,
                echo=True,
                log=log,
                watch=(OOM_NEEDLE,),
                on_start=lock.note_build,
            )
        finally:
            lock.note_build(None)
    info: dict[str, Any] = {"build_log": str(log_path), "build_command": argv}
    if done.ok:
        found = [m.group(0) for line in done.tail for m in [_ALIENV.search(line)] if m]
        info["alienv"] = found[-1] if found else None
        return info
    oom = OOM_NEEDLE in done.seen or any(
        _mentions(p, OOM_NEEDLE) for p in _log_files_named(done.tail, workdir)
    )
    if oom:
        raise O2SyncError(
            f"aliBuild ran out of memory: the compiler was killed ('{OOM_NEEDLE}') at "
            f"-j {spec.jobs}. Lower spec.jobs (e.g. to {max(1, spec.jobs // 2)}) and trigger "
            f"the job again; the sources are updated, the last good build is unchanged. "
            f"Log: {log_path}",
            "out_of_memory",
            **info,
        )
    if done.timed_out:
        raise O2SyncError(
            f"aliBuild did not finish within build_timeout ({spec.build_timeout:g} s) and was "
            f"stopped; raise spec.build_timeout (and policy.timeout). Log: {log_path}",
            "build_timeout",
            **info,
        )
    raise O2SyncError(
        f"aliBuild failed: {done.describe()}\nThe sources are updated, the last good build "
        f"is unchanged; the next run builds again. Log: {log_path}",
        "build_failed",
        **info,
    )


def _update_and_build(
    spec: O2SyncSpec,
    ctx: Context,
    workdir: Path,
    sw: Path,
    lock: FileLock,
    plans: list[RepoPlan],
    moving: list[RepoPlan],
    last: dict[str, Any] | None,
    result: dict[str, Any],
) -> dict[str, Any]:
    """Steps 5-7 of the module docstring; fills ``result`` as it goes (also on failure)."""
    before = result["heads_before"]
    free_gb = _check_disk(sw if sw.exists() else workdir, spec.min_free_gb)
    say(f"free space {free_gb:.1f} GB (min_free_gb {spec.min_free_gb:g})")
    for p in moving:
        if p.rebase:
            rebase(p)
    for p in moving:
        if not p.rebase:
            fast_forward(p)
    heads = {p.name: p.git.head() for p in plans}
    moved = {
        name: {"from": before[name], "to": heads[name]}
        for name in heads
        if heads[name] != before[name]
    }
    result.update(heads=heads, repos_moved=moved)
    if spec.force_build:
        why = "forced"
    elif moved:
        why = f"moved: {', '.join(moved)}"
    elif last is None:
        why = "no good build recorded"
    else:
        why = "heads differ from the last good build"
    result["build_reason"] = why
    say(f"build due ({why})")
    result["build"] = "failed"
    info = _build(spec, ctx, workdir, sw, lock)
    result["build"] = "built"
    return info


def sync_source(spec: O2SyncSpec, ctx: Context) -> dict[str, Any]:
    assert spec.workdir is not None  # the spec's validator requires it in mode source
    workdir = expand_path(spec.workdir, "workdir")
    if not workdir.is_dir():
        raise O2SyncError(f"workdir {workdir} is not a directory", "bad_workdir")
    sw = workdir / spec.sw_dir
    env = command_env(spec)
    with FileLock(workdir / ".o2sync.lock", f"work dir {workdir}") as lock:
        state = JobState(ctx.state_dir)
        plans = repo_plans(workdir, spec, env)
        fetch_and_plan(plans)
        before = {p.name: p.head for p in plans}
        result: dict[str, Any] = {
            "mode": "source",
            "package": spec.package,
            "branch": plans[0].branch,
            "heads_before": before,
            "repos_moved": {},
            "build": None,
        }
        last = state.build
        moving = [p for p in plans if p.action in ("rebase", "fast-forward")]
        for p in plans:
            say(f"{p.name}: {p.action} ({p.head[:12]} -> {p.remote}/{p.branch} {p.target[:12]})")
        due = spec.force_build or bool(moving) or last is None or last.get("heads") != before
        if not due:
            assert last is not None
            result.update(
                build="skipped",
                heads=before,
                alienv=last.get("alienv"),
                last_build_at=last.get("at"),
                summary=f"nothing moved since the last good build ({last.get('at')}): "
                "build skipped",
            )
            say(result["summary"])
            return result
        try:
            info = _update_and_build(spec, ctx, workdir, sw, lock, plans, moving, last, result)
        except O2SyncError as exc:
            exc.details = {**result, **exc.details}
            raise
        heads = result["heads"]
        state.record_build(
            {
                "heads": heads,
                "at": now_iso(),
                "alienv": info.get("alienv"),
                "run_id": ctx.run_id,
                "log": info["build_log"],
            }
        )
        result.update(info)
        result["summary"] = f"built {spec.package} ({result['build_reason']})" + (
            f": {info['alienv']}" if info.get("alienv") else ""
        )
        return result
