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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.containers import render_command
from orchestrator.tasks.o2sync import proc
from orchestrator.tasks.o2sync.context import Context, command_env, say
from orchestrator.tasks.o2sync.errors import O2SyncError
from orchestrator.tasks.o2sync.spec import O2SyncSpec
from orchestrator.tasks.o2sync.state import FileLock, JobState, expand_path, now_iso

OOM_NEEDLE = "Killed signal terminated program cc1plus"
BUILD_LOGS_KEPT = 20
_ALIENV = re.compile(r"alienv enter (\S+)")


class Git:
    """git in one checkout: never prompts (unattended), messages in English for parsing."""

    def __init__(self, repo: Path, name: str, timeout_s: float, env: dict[str, str]) -> None:
        self.repo = repo
        self.name = name
        self.timeout_s = timeout_s
        self.env = dict(env, GIT_TERMINAL_PROMPT="0", LC_ALL="C", GIT_EDITOR="true")

    def run(self, *args: str) -> proc.Completed:
        return proc.run(
            ["git", "-C", str(self.repo), *args], timeout_s=self.timeout_s, env=self.env
        )

    def out(self, *args: str, what: str) -> str:
        done = self.run(*args)
        if not done.ok:
            raise O2SyncError(
                f"{self.name}: cannot {what}: {done.describe()}", "git_failed", repo=self.name
            )
        return done.output.strip()

    def head(self) -> str:
        return self.out("rev-parse", "HEAD", what="read HEAD")

    def resolve(self, ref: str) -> str | None:
        done = self.run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        return done.output.strip() if done.ok else None

    def branch(self) -> str | None:
        done = self.run("symbolic-ref", "--short", "--quiet", "HEAD")
        return done.output.strip() if done.ok else None

    def is_ancestor(self, older: str, newer: str) -> bool:
        done = self.run("merge-base", "--is-ancestor", older, newer)
        if done.returncode not in (0, 1) or done.timed_out:
            raise O2SyncError(f"{self.name}: {done.describe()}", "git_failed", repo=self.name)
        return done.returncode == 0

    def operation_in_progress(self) -> str | None:
        for ref, what in (
            ("MERGE_HEAD", "a merge"),
            ("CHERRY_PICK_HEAD", "a cherry-pick"),
            ("REVERT_HEAD", "a revert"),
        ):
            if self.resolve(ref):
                return what
        for path in ("rebase-merge", "rebase-apply"):
            git_path = Path(self.out("rev-parse", "--git-path", path, what="inspect .git"))
            if not git_path.is_absolute():
                git_path = self.repo / git_path
            if git_path.exists():
                return "a rebase"
        return None

    def dirty_files(self) -> list[str]:
        done = self.run("status", "--porcelain", "--untracked-files=no")
        if not done.ok:
            raise O2SyncError(f"{self.name}: {done.describe()}", "git_failed", repo=self.name)
        # Not stripped: the first column of `XY path` may be a space.
        return [line[3:] for line in done.tail if line.strip()]


@dataclass
class RepoPlan:
    """One checkout: where it is now and where this run takes it."""

    name: str
    git: Git
    remote: str
    branch: str
    rebase: bool
    head: str = ""
    target: str = ""
    action: str = "none"  # none | fast-forward | rebase | ahead


def _checkout(workdir: Path, rel: str, spec: O2SyncSpec, env: dict[str, str]) -> Git:
    path = workdir / rel
    git = Git(path, rel, spec.git_timeout, env)
    if not path.is_dir():
        raise O2SyncError(
            f"{path} does not exist: the work dir must hold O2/, {spec.package}/, alidist/ "
            "(git checkouts) and sw/; clone it there or fix spec.workdir / spec.fast_forward",
            "bad_workdir",
        )
    done = git.run("rev-parse", "--is-inside-work-tree")
    if not done.ok or done.output.strip() != "true":
        raise O2SyncError(f"{path} is not a git checkout ({done.describe()})", "bad_workdir")
    return git


def _current_branch(git: Git, name: str, expected: str | None, field: str) -> str:
    """The branch ``git`` has checked out, refusing a detached HEAD or a branch other than the
    manifest's (``field`` names the manifest setting). Fast-forwarding or rebasing another
    branch would move a branch the user did not name."""
    branch = git.branch()
    if branch is None:
        raise O2SyncError(
            f"{name}: HEAD is detached; check out the branch to follow "
            f"(git -C {git.repo} switch {expected or 'BRANCH'}). Nothing was changed",
            "bad_checkout",
        )
    if expected is not None and branch != expected:
        raise O2SyncError(
            f"{name} is on branch {branch!r}, the manifest follows {expected!r}; "
            f"switch back (git -C {git.repo} switch {expected}) or change {field}. "
            "Nothing was changed",
            "bad_checkout",
        )
    return branch


def _plans(workdir: Path, spec: O2SyncSpec, env: dict[str, str]) -> list[RepoPlan]:
    pkg = _checkout(workdir, spec.package, spec, env)
    _current_branch(pkg, spec.package, spec.branch, "spec.branch")
    plans = [RepoPlan(spec.package, pkg, spec.upstream.remote, spec.upstream.branch, True)]
    for ff in spec.fast_forward:
        git = _checkout(workdir, ff.path, spec, env)
        checked_out = _current_branch(git, ff.path, ff.branch, "spec.fast_forward")
        ff_branch = ff.branch or checked_out
        plans.append(RepoPlan(ff.path, git, ff.remote, ff_branch, False))
    for plan in plans:
        busy = plan.git.operation_in_progress()
        if busy:
            raise O2SyncError(
                f"{plan.name}: {busy} is in progress; finish or abort it by hand. Nothing was "
                "changed",
                "bad_checkout",
            )
    dirty = pkg.dirty_files()
    if dirty:
        raise O2SyncError(
            f"{spec.package} has uncommitted changes in: {', '.join(dirty[:20])}; commit or "
            "stash them so that the rebase cannot touch them. Nothing was changed",
            "dirty_checkout",
            dirty=dirty,
        )
    return plans


def _fetch_and_plan(plans: list[RepoPlan]) -> None:
    for plan in plans:
        say(f"{plan.name}: git fetch {plan.remote}")
        done = plan.git.run("fetch", "--quiet", plan.remote)
        if not done.ok:
            raise O2SyncError(
                f"{plan.name}: fetching {plan.remote} failed: {done.describe()}. Check the "
                "network and the remote's URL/credentials; nothing was changed",
                "fetch_failed",
                repo=plan.name,
            )
        plan.head = plan.git.head()
        ref = f"refs/remotes/{plan.remote}/{plan.branch}"
        target = plan.git.resolve(ref)
        if target is None:
            raise O2SyncError(
                f"{plan.name}: {plan.remote}/{plan.branch} does not exist after the fetch; "
                "fix the remote or branch in the manifest. Nothing was changed",
                "bad_remote",
                repo=plan.name,
            )
        plan.target = target
        if plan.git.is_ancestor(target, plan.head):
            plan.action = "none" if target == plan.head else "ahead"
        elif plan.rebase:
            plan.action = "rebase"
        elif plan.git.is_ancestor(plan.head, target):
            plan.action = "fast-forward"
        else:
            raise O2SyncError(
                f"{plan.name}: the checkout has commits that {plan.remote}/{plan.branch} does "
                "not have and vice versa, so it cannot be fast-forwarded; rebase or reset it "
                "by hand. Nothing was changed",
                "diverged",
                repo=plan.name,
            )


def _rebase(plan: RepoPlan) -> None:
    git = plan.git
    upstream = f"{plan.remote}/{plan.branch}"
    say(f"{plan.name}: rebasing onto {upstream}")
    # Config rather than --no-update-refs: older git (SLES on login nodes) lacks the option
    # and ignores an unknown config key.
    done = git.run(
        "-c", "rebase.autoStash=false", "-c", "rebase.updateRefs=false", "rebase", plan.target
    )
    if done.ok:
        return
    conflicts = [
        line.strip()
        for line in git.run("diff", "--name-only", "--diff-filter=U").output.splitlines()
        if line.strip()
    ]
    if git.operation_in_progress() == "a rebase":
        aborted = git.run("rebase", "--abort")
        if not aborted.ok:
            raise O2SyncError(
                f"{plan.name}: the rebase onto {upstream} failed and `git rebase --abort` "
                f"failed too ({aborted.describe()}); finish by hand in {git.repo}: "
                "git rebase --abort",
                "rebase_failed",
                conflicts=conflicts,
            )
    now = git.head()
    restored = now == plan.head
    state = (
        f"the rebase was aborted and {plan.name} is as it was (HEAD {plan.head[:12]})"
        if restored
        else f"WARNING: HEAD is now {now[:12]}, it was {plan.head[:12]}"
    )
    if conflicts:
        raise O2SyncError(
            f"{plan.name}: rebasing {plan.branch!r} onto {upstream} conflicts in: "
            f"{', '.join(conflicts)}; {state}. Resolve by hand: cd {git.repo} && git rebase "
            f"{upstream}. O2 and alidist were not updated and nothing was built",
            "rebase_conflict",
            conflicts=conflicts,
            head=now,
        )
    raise O2SyncError(
        f"{plan.name}: rebase onto {upstream} failed: {done.describe()}; {state}",
        "rebase_failed",
        head=now,
    )


def _fast_forward(plan: RepoPlan) -> None:
    say(f"{plan.name}: fast-forward to {plan.remote}/{plan.branch}")
    done = plan.git.run("merge", "--ff-only", "--quiet", plan.target)
    if not done.ok:
        raise O2SyncError(
            f"{plan.name}: fast-forward to {plan.remote}/{plan.branch} failed: "
            f"{done.describe()}. Local changes in the way? Commit or stash them",
            "fast_forward_failed",
            repo=plan.name,
        )


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
            _rebase(p)
    for p in moving:
        if not p.rebase:
            _fast_forward(p)
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
        plans = _plans(workdir, spec, env)
        _fetch_and_plan(plans)
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
