"""The O2Sync manifest's ``spec``: keep an ALICE O2Physics installation current.

One flat model for both modes (``mode: cvmfs`` tracks the daily tags published on CVMFS,
``mode: source`` rebuilds a source checkout with aliBuild), so that the loader can place an
error on its line; a field that belongs to the other mode is refused by name. Paths may start
with ``~`` and contain ``$VARS`` (``$SCRATCH/o2``): they are expanded when the task runs, in the
daemon's environment, and an unset variable is an error then.
"""

from __future__ import annotations

import string
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, StrictBool, field_validator, model_validator

from orchestrator.manifests.fields import Argv, Container, Duration, EnvMap, StrictModel
from orchestrator.manifests.models import ManifestBase

PROBE_PLACEHOLDERS = ("package", "tag", "arch", "cvmfs_root")
DEFAULT_PROBE = [
    "{cvmfs_root}/bin/alienv",
    "setenv",
    "VO_ALICE@{package}::{tag}",
    "-c",
    "true",
]
_GIT_NAME = r"^[A-Za-z0-9][A-Za-z0-9._/+-]*$"
_PACKAGE = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"
_REL_DIR = r"^[^/\s][^\s]*$"


class Pointer(StrictModel):
    """What the user's jobs read to find the promoted tag. Both are replaced atomically
    (temp + rename), so a job that starts mid-update sees the old or the new tag, never half."""

    symlink: str | None = Field(
        None,
        min_length=1,
        description="symlink to the promoted tag's payload directory "
        "(<cvmfs_root>/<arch>/Packages/<package>/<tag>)",
    )
    env_file: str | None = Field(
        None,
        min_length=1,
        description="file of shell assignments: <PACKAGE>_TAG=<tag>, <PACKAGE>_VERSION="
        "VO_ALICE@<package>::<tag> and <PACKAGE>_ENTER='<cvmfs_root>/bin/alienv enter ...'; "
        "`source` it, or read it as an env file",
    )

    @model_validator(mode="after")
    def _one_at_least(self) -> Pointer:
        if self.symlink is None and self.env_file is None:
            raise ValueError("pointer needs 'symlink', 'env_file' or both")
        return self


class Upstream(StrictModel):
    """The branch the user's O2Physics branch is rebased on."""

    remote: str = Field("upstream", pattern=_GIT_NAME, description="git remote name")
    branch: str = Field("master", pattern=_GIT_NAME, description="branch on that remote")


class FastForward(StrictModel):
    """A repository of the work dir that is only ever fast-forwarded (O2, alidist)."""

    path: str = Field(pattern=_REL_DIR, description="directory inside the work dir")
    remote: str = Field("origin", pattern=_GIT_NAME)
    branch: str | None = Field(
        None, pattern=_GIT_NAME, description="remote branch (default: the checked-out branch)"
    )


def _fast_forward_from_string(value: Any) -> Any:
    # `fast_forward: [O2, alidist]`: the directory alone, origin and the checked-out branch.
    return {"path": value} if isinstance(value, str) else value


CVMFS_FIELDS = (
    "cvmfs_root",
    "arch",
    "pointer",
    "keep",
    "probe",
    "probe_timeout",
    "max_probes",
    "stale_after",
)
SOURCE_FIELDS = (
    "workdir",
    "branch",
    "upstream",
    "fast_forward",
    "defaults",
    "jobs",
    "alibuild",
    "alibuild_args",
    "config_dir",
    "sw_dir",
    "min_free_gb",
    "build_timeout",
    "git_timeout",
    "force_build",
)


class O2SyncSpec(StrictModel):
    """``mode: cvmfs``: promote the newest daily tag that passes a probe; ``mode: source``:
    update O2/alidist/O2Physics in a work dir and rebuild with aliBuild when something moved."""

    mode: Literal["cvmfs", "source"] = Field(
        description="cvmfs: track published daily tags; source: rebuild a checkout with aliBuild"
    )
    package: str = Field(
        "O2Physics", pattern=_PACKAGE, description="the package tracked (cvmfs) or built (source)"
    )
    container: Container | None = Field(
        None,
        description="wrapper the probe (cvmfs) or aliBuild (source) runs in; on Perlmutter "
        "{runtime: shifter, image: tch285/o2alma:latest, extra_args: ['--module=cvmfs']}",
    )
    env: EnvMap = Field(
        default_factory=dict, description="extra environment for the probe / git / aliBuild"
    )
    state_dir: str | None = Field(
        None,
        min_length=1,
        description="where promoted/rejected tags and build records are kept "
        "(default: $ORCH_STATE_DIR/o2sync/<job>)",
    )

    # ------------------------------------------------------------------ mode: cvmfs
    cvmfs_root: str = Field(
        "/cvmfs/alice.cern.ch", min_length=1, description="CVMFS repository root"
    )
    arch: str = Field(
        "el9-x86_64", pattern=r"^[A-Za-z0-9_.-]+$", description="platform directory under the root"
    )
    pointer: Pointer | None = Field(None, description="required in mode cvmfs")
    keep: int = Field(5, ge=1, le=100, description="promoted tags kept for rollback")
    probe: Argv = Field(
        default_factory=lambda: list(DEFAULT_PROBE),
        description="argv that must exit 0 before a tag is promoted (run in `container`); "
        "placeholders {package}, {tag}, {arch}, {cvmfs_root}",
    )
    probe_timeout: Duration = Field(600.0, description="a probe that runs longer fails")
    max_probes: int = Field(
        3, ge=1, le=20, description="candidate tags probed per run, newest first"
    )
    stale_after: Duration | None = Field(
        7 * 86400.0,
        description="raise an alert when the pointer has named the same tag for longer (daily "
        "tags stopped being published, or each failed its probe); null: never",
    )

    # ------------------------------------------------------------------ mode: source
    workdir: str | None = Field(
        None,
        min_length=1,
        description="required in mode source: the directory holding O2/, O2Physics/, "
        "alidist/ and sw/; aliBuild runs here",
    )
    branch: str | None = Field(
        None,
        pattern=_GIT_NAME,
        description="the user's branch in <workdir>/<package> (default: the checked-out one; "
        "the run refuses another)",
    )
    upstream: Upstream = Field(
        default_factory=lambda: Upstream(), description="what the user's branch is rebased on"
    )
    fast_forward: list[
        Annotated[
            FastForward,
            BeforeValidator(_fast_forward_from_string, json_schema_input_type=FastForward | str),
        ]
    ] = Field(
        default_factory=lambda: [FastForward(path="O2"), FastForward(path="alidist")],
        description="repositories updated with fast-forward only",
    )
    defaults: str = Field("o2", pattern=_PACKAGE, description="aliBuild --defaults")
    jobs: int = Field(
        8, ge=1, le=256, description="aliBuild -j (more than 8 often runs out of memory)"
    )
    alibuild: Argv = Field(
        default_factory=lambda: ["aliBuild"], description="how aliBuild is started"
    )
    alibuild_args: list[str] = Field(
        default_factory=list,
        description="further aliBuild build options, e.g. ['--debug'] or ['-a', 'slc9_x86-64']",
    )
    config_dir: str = Field(
        "alidist", pattern=_REL_DIR, description="recipe directory (aliBuild -c), in workdir"
    )
    sw_dir: str = Field(
        "sw", pattern=_REL_DIR, description="ALIBUILD_WORK_DIR, relative to workdir"
    )
    min_free_gb: float = Field(
        50.0, ge=0, description="refuse to build with less free space than this under sw_dir"
    )
    build_timeout: Duration = Field(
        8 * 3600.0,
        description="aliBuild is stopped after this (keep it below policy.timeout)",
    )
    git_timeout: Duration = Field(900.0, description="limit for each git command")
    force_build: StrictBool = Field(
        False, description="build even when no repository moved since the last good build"
    )

    @field_validator("probe")
    @classmethod
    def _known_placeholders(cls, value: list[str]) -> list[str]:
        for arg in value:
            try:
                names = [name for _, name, _, _ in string.Formatter().parse(arg) if name]
            except ValueError as exc:
                raise ValueError(
                    f"probe argument {arg!r}: {exc} (write '{{{{' for a brace)"
                ) from exc
            unknown = [n for n in names if n not in PROBE_PLACEHOLDERS]
            if unknown:
                raise ValueError(
                    f"probe argument {arg!r} uses {{{unknown[0]}}}; valid placeholders: "
                    + ", ".join("{" + p + "}" for p in PROBE_PLACEHOLDERS)
                )
        if not any("{tag}" in arg for arg in value):
            raise ValueError("the probe must name the tag it checks: use {tag} in an argument")
        return value

    @model_validator(mode="after")
    def _fields_match_mode(self) -> O2SyncSpec:
        other = SOURCE_FIELDS if self.mode == "cvmfs" else CVMFS_FIELDS
        # A value other than the default, not "a field that was set": the daemon hands the
        # task a full dump of the model, with every field present.
        fields = type(self).model_fields
        wrong = [
            name
            for name in other
            if getattr(self, name) != fields[name].get_default(call_default_factory=True)
        ]
        if wrong:
            other_mode = "source" if self.mode == "cvmfs" else "cvmfs"
            raise ValueError(
                f"{', '.join(wrong)}: only for mode {other_mode}; this spec has mode {self.mode}"
            )
        if self.mode == "cvmfs" and self.pointer is None:
            raise ValueError(
                "mode cvmfs needs 'pointer': {symlink: PATH} and/or {env_file: PATH}, "
                "what your jobs read to find the promoted tag"
            )
        if self.mode == "source" and self.workdir is None:
            raise ValueError(
                "mode source needs 'workdir': the directory holding O2/, O2Physics/, alidist/, sw/"
            )
        return self


class O2SyncManifest(ManifestBase):
    kind: Literal["O2Sync"]
    spec: O2SyncSpec
