"""The git side of ``mode: source``: the checkouts (O2, O2Physics, alidist), what a run will do
to each (fetch, then rebase the user's branch or fast-forward), done so that a failure leaves a
checkout as it was."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.tasks.o2sync import proc
from orchestrator.tasks.o2sync.context import say
from orchestrator.tasks.o2sync.errors import O2SyncError
from orchestrator.tasks.o2sync.spec import O2SyncSpec


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


def checkout(workdir: Path, rel: str, spec: O2SyncSpec, env: dict[str, str]) -> Git:
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


def current_branch(git: Git, name: str, expected: str | None, field: str) -> str:
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


def repo_plans(workdir: Path, spec: O2SyncSpec, env: dict[str, str]) -> list[RepoPlan]:
    pkg = checkout(workdir, spec.package, spec, env)
    current_branch(pkg, spec.package, spec.branch, "spec.branch")
    plans = [RepoPlan(spec.package, pkg, spec.upstream.remote, spec.upstream.branch, True)]
    for ff in spec.fast_forward:
        git = checkout(workdir, ff.path, spec, env)
        checked_out = current_branch(git, ff.path, ff.branch, "spec.fast_forward")
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


def fetch_and_plan(plans: list[RepoPlan]) -> None:
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


def rebase(plan: RepoPlan) -> None:
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


def fast_forward(plan: RepoPlan) -> None:
    say(f"{plan.name}: fast-forward to {plan.remote}/{plan.branch}")
    done = plan.git.run("merge", "--ff-only", "--quiet", plan.target)
    if not done.ok:
        raise O2SyncError(
            f"{plan.name}: fast-forward to {plan.remote}/{plan.branch} failed: "
            f"{done.describe()}. Local changes in the way? Commit or stash them",
            "fast_forward_failed",
            repo=plan.name,
        )
