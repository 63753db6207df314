"""O2Sync fixtures: a CVMFS-like directory tree, real git repositories with bare remotes, a
tiny alidist-like recipe repository for the real aliBuild, and a runner for the task process.

The one fake is CVMFS (it cannot be mounted here): ``cvmfs_tree`` is a plain directory laid out
like ``/cvmfs/alice.cern.ch/<arch>/{Modules/modulefiles,Packages}/<pkg>/<tag>``, and the probe
the tests configure is ``probe_script``, a small real script standing in for
``alienv setenv VO_ALICE@<pkg>::<tag> -c true`` (alienv cannot exist without CVMFS): it passes
when the tag's payload directory holds a file named ``ok``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator.tasks.o2sync.spec import O2SyncManifest
from tests.conftest import require

ARCH = "el9-x86_64"
PACKAGE = "O2Physics"
BRANCH = "mybranch"


@pytest.fixture(autouse=True)
def _git_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """git in the tests (and in the task and daemon processes they start) sees only this
    config: an identity for commits and rebases, and a fixed default branch."""
    config = tmp_path / "gitconfig"
    config.write_text(
        "[user]\n\tname = O2Sync Test\n\temail = o2sync@example.org\n"
        "[init]\n\tdefaultBranch = master\n[advice]\n\tdetachedHead = false\n"
    )
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} in {repo}: {done.stderr}")
    return done.stdout.strip()


def commit_file(repo: Path, name: str, text: str, message: str) -> str:
    path = repo / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


# --------------------------------------------------------------------------- CVMFS (fake)


@dataclass
class CvmfsTree:
    root: Path

    def publish(self, tag: str, *, payload: bool = True, good: bool = True) -> None:
        """Announce ``tag`` (modulefile); with ``payload`` create its payload directory, with
        ``good`` the file that makes the stand-in probe pass."""
        modules = self.root / ARCH / "Modules" / "modulefiles" / PACKAGE
        modules.mkdir(parents=True, exist_ok=True)
        (modules / tag).write_text("#%Module1.0\n")
        if payload:
            package = self.root / ARCH / "Packages" / PACKAGE / tag
            package.mkdir(parents=True, exist_ok=True)
            if good:
                (package / "ok").write_text("")

    def payload(self, tag: str) -> Path:
        return self.root / ARCH / "Packages" / PACKAGE / tag


@pytest.fixture
def cvmfs_tree(tmp_path: Path) -> CvmfsTree:
    root = tmp_path / "cvmfs" / "alice.cern.ch"
    (root / ARCH / "Modules" / "modulefiles" / PACKAGE).mkdir(parents=True)
    return CvmfsTree(root)


@pytest.fixture
def probe_script(tmp_path: Path) -> Path:
    """Stand-in for `alienv setenv VO_ALICE@PKG::TAG -c true` (no alienv without CVMFS)."""
    script = tmp_path / "fake-alienv-probe"
    script.write_text(
        textwrap.dedent(
            """\
            #!/bin/sh
            # usage: fake-alienv-probe PAYLOAD_DIR -- passes when PAYLOAD_DIR/ok exists
            if [ -f "$1/ok" ]; then echo "environment for $1 loaded"; exit 0; fi
            echo "ERROR: $1 is not (fully) published" >&2
            exit 1
            """
        )
    )
    script.chmod(0o755)
    return script


def cvmfs_spec(tree: CvmfsTree, probe: Path, pointer_dir: Path, **extra: Any) -> dict[str, Any]:
    spec = {
        "mode": "cvmfs",
        "cvmfs_root": str(tree.root),
        "arch": ARCH,
        "pointer": {
            "symlink": str(pointer_dir / "O2Physics-current"),
            "env_file": str(pointer_dir / "O2Physics.env"),
        },
        "keep": 3,
        "probe": [str(probe), "{cvmfs_root}/{arch}/Packages/{package}/{tag}"],
        "probe_timeout": "30s",
    }
    spec.update(extra)
    return spec


# --------------------------------------------------------------------------- source work dir


def alibuild_path() -> Path | None:
    local = Path(sys.executable).parent / "aliBuild"
    found = local if local.exists() else shutil.which("aliBuild")
    return Path(found) if found else None


def require_alibuild() -> Path:
    path = alibuild_path()
    require(path is not None, "aliBuild (pip install alibuild, in the project's dev extras)")
    assert path is not None
    return path


RECIPE = """\
package: O2Physics
version: "%(tag_basename)s"
tag: master
source: {source}
---
# A recipe that builds in well under a second: the "installation" is the source's text files.
echo "building O2Physics from $SOURCEDIR"
{extra}
mkdir -p "$INSTALLROOT/etc/modulefiles"
cat "$SOURCEDIR"/*.txt > "$INSTALLROOT/contents.txt"
echo "#%Module1.0" > "$INSTALLROOT/etc/modulefiles/$PKGNAME"
"""
OOM_LINES = (
    'echo "c++: fatal error: Killed signal terminated program cc1plus" >&2\n'
    'echo "compilation terminated." >&2\n'
    "exit 1"
)


@dataclass
class Workdir:
    """A work dir like a physicist's: O2/, O2Physics/ (fork on BRANCH, remote upstream),
    alidist/ (a tiny recipe repository) and sw/, each checkout cloned from a bare remote; and
    ``seed`` clones through which the tests push upstream changes."""

    root: Path
    remotes: Path

    @property
    def work(self) -> Path:
        return self.root / "work"

    def repo(self, name: str) -> Path:
        return self.work / name

    def seed(self, name: str) -> Path:
        return self.remotes / f"{name}-seed"

    def push_upstream(self, name: str, file: str, text: str, message: str) -> str:
        """Commit to the seed clone of ``name`` and push it to the bare remote."""
        seed = self.seed(name)
        sha = commit_file(seed, file, text, message)
        git(seed, "push", "-q", "origin", "HEAD")
        return sha

    def set_recipe(self, extra: str) -> None:
        """Change the recipe upstream (alidist's remote), e.g. to fail or to be slow."""
        text = RECIPE.format(source=(self.remotes / "O2Physics.git").as_uri(), extra=extra)
        self.push_upstream("alidist", "o2physics.sh", text, "recipe change")

    def heads(self) -> dict[str, str]:
        return {n: git(self.repo(n), "rev-parse", "HEAD") for n in ("O2", PACKAGE, "alidist")}


def _bare_with_seed(remotes: Path, name: str, files: dict[str, str], branch: str) -> Path:
    seed = remotes / f"{name}-seed"
    seed.mkdir(parents=True)
    git(seed, "init", "-q", "-b", branch)
    for file, text in files.items():
        (seed / file).write_text(text)
    git(seed, "add", ".")
    git(seed, "commit", "-q", "-m", f"{name}: initial")
    bare = remotes / f"{name}.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(bare)], check=True, timeout=30)
    git(seed, "remote", "add", "origin", str(bare))
    git(seed, "fetch", "-q", "origin")
    git(seed, "branch", "-q", "--set-upstream-to", f"origin/{branch}")
    return bare


@pytest.fixture
def workdir(tmp_path: Path) -> Workdir:
    remotes = tmp_path / "remotes"
    w = Workdir(tmp_path, remotes)
    _bare_with_seed(remotes, "O2", {"o2.txt": "O2 v1\n"}, "dev")
    _bare_with_seed(remotes, PACKAGE, {"analysis.txt": "line 1\nline 2\n"}, "master")
    source = (remotes / f"{PACKAGE}.git").as_uri()
    _bare_with_seed(
        remotes,
        "alidist",
        {
            "defaults-o2.sh": "package: defaults-o2\nversion: v1\n---\n",
            "o2physics.sh": RECIPE.format(source=source, extra=""),
        },
        "master",
    )
    w.work.mkdir()
    for name in ("O2", "alidist"):
        subprocess.run(
            ["git", "clone", "-q", str(remotes / f"{name}.git"), str(w.repo(name))],
            check=True,
            timeout=30,
        )
    # O2Physics: the user's fork (origin) with upstream as a second remote, on their branch
    # with a commit of their own.
    pkg = w.repo(PACKAGE)
    subprocess.run(
        ["git", "clone", "-q", str(remotes / f"{PACKAGE}.git"), str(pkg)], check=True, timeout=30
    )
    git(pkg, "remote", "add", "upstream", str(remotes / f"{PACKAGE}.git"))
    git(pkg, "fetch", "-q", "upstream")
    git(pkg, "switch", "-q", "-c", BRANCH)
    commit_file(pkg, "mine.txt", "my analysis\n", "my work")
    (w.work / "sw").mkdir()
    return w


def source_spec(w: Workdir, alibuild: Path | None = None, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "mode": "source",
        "workdir": str(w.work),
        "branch": BRANCH,
        "upstream": {"remote": "upstream", "branch": "master"},
        "fast_forward": [
            {"path": "O2", "branch": "dev"},
            {"path": "alidist", "branch": "master"},
        ],
        "defaults": "o2",
        "jobs": 2,
        "alibuild": [str(alibuild or "aliBuild")],
        # The development machines run Debian, which aliBuild does not know as a platform.
        "alibuild_args": ["--force-unknown-architecture"],
        "min_free_gb": 0.01,
        "build_timeout": "2m",
        "git_timeout": "30s",
    }
    spec.update(extra)
    return spec


# --------------------------------------------------------------------------- the task process


def manifest(name: str, spec: dict[str, Any], **top: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"apiVersion": "orchestrator/v1", "kind": "O2Sync", "name": name}
    doc.update(top)
    doc["spec"] = spec
    return doc


@dataclass
class TaskRun:
    returncode: int
    stdout: str
    stderr: str
    result: dict[str, Any]


def task_files(tmp_path: Path, name: str, spec: dict[str, Any]) -> tuple[dict[str, str], Path]:
    """The environment the daemon gives a task (python_task contract), and the result path."""
    run_dir = tmp_path / "runs" / f"{name}-{len(list(tmp_path.glob('runs/*')))}"
    run_dir.mkdir(parents=True)
    doc = O2SyncManifest.model_validate(manifest(name, spec))
    (run_dir / "manifest.json").write_text(doc.model_dump_json())
    env = dict(os.environ)
    env.update(
        ORCH_TASK_MANIFEST=str(run_dir / "manifest.json"),
        ORCH_TASK_RESULT=str(run_dir / "task-result.json"),
        ORCH_STATE_DIR=str(tmp_path / "state"),
        ORCH_JOB=name,
        ORCH_RUN_ID=run_dir.name,
        PYTHONUNBUFFERED="1",
    )
    return env, run_dir / "task-result.json"


def run_task(tmp_path: Path, name: str, spec: dict[str, Any], timeout: float = 60) -> TaskRun:
    """One O2Sync run as the daemon starts it: ``python -m orchestrator.tasks.o2sync``."""
    env, result_path = task_files(tmp_path, name, spec)
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.tasks.o2sync"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    return TaskRun(done.returncode, done.stdout, done.stderr, result)
