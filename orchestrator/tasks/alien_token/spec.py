"""The AliEnToken manifest's ``spec``: where the token is, when to renew it, how to run
``alien-token-init``, and where to copy the token.

Paths are expanded when the task runs (not when the manifest is loaded): ``~``, ``$VAR`` and
``${VAR}`` from the task's environment, and ``$UID`` as the numeric user id (bash sets UID
but does not export it, so it is substituted here), which gives the defaults the very paths
``alien-token-init`` writes: ``/tmp/tokencert_$UID.pem`` and ``/tmp/tokenkey_$UID.pem``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictBool, field_validator, model_validator

from orchestrator.manifests.fields import Argv, Container, Duration, EnvMap, StrictModel
from orchestrator.manifests.models import ManifestBase
from orchestrator.tasks.alien_token.hostnames import HOST_PATTERN_RE, expand_host_pattern

# JAliEn clients refuse a token with less than this left (alien.py: "token valid < 600 s").
CLIENT_MIN_VALID_S = 600.0

# Never starting with '-': a host name must not be read as an ssh option.
HostName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_\[][A-Za-z0-9_.@:\[\]-]*$")]
PathText = Annotated[str, Field(min_length=1)]


class Targets(StrictModel):
    """Where the token is copied after each run (only a token clients accept is copied)."""

    directories: list[PathText] = Field(
        default_factory=list,
        description="local directories (e.g. '$HOME/tokens' on the shared home) that get a copy "
        "of the certificate and key, under the same file names, mode 0600, atomically",
    )
    env_file: PathText | None = Field(
        None,
        description="a file that batch jobs source: exports JALIEN_TOKEN_CERT, JALIEN_TOKEN_KEY "
        "(the copy in the first of 'directories', or cert_path/key_path without directories) "
        "and ALIENPY_DEBUG_FILE",
    )
    alienpy_debug_file: PathText | None = Field(
        None,
        description="ALIENPY_DEBUG_FILE in the env file (default: alienpy_debug.log next to the "
        "exported certificate)",
    )
    hosts: list[HostName] = Field(
        default_factory=list,
        description="remote hosts (ssh names, 'user@host' allowed) that get a copy over ssh",
    )
    host_pattern: Annotated[str, Field(pattern=HOST_PATTERN_RE)] | None = Field(
        None,
        description="hosts as a brace pattern, e.g. 'login{01..40}' or 'login{01,02,05}'; "
        "added to 'hosts'",
    )
    ssh_config: PathText | None = Field(
        None, description="ssh client configuration file (ssh -F); default: ssh's own"
    )
    ssh_options: list[str] = Field(
        default_factory=list,
        description="further ssh options, e.g. ['-i', '~/.ssh/id_token_copy']; BatchMode=yes "
        "and ConnectTimeout are always set",
    )
    remote_dir: PathText = Field(
        "/tmp",
        description="directory on each host for the copy (created 0700 when missing); "
        "'~/' means the remote home",
    )
    parallelism: int = Field(8, ge=1, le=64, description="hosts copied to at once")
    connect_timeout: Duration = Field(10.0, description="ssh ConnectTimeout per host")
    host_timeout: Duration = Field(
        60.0, description="a host's whole copy (connect, transfer, rename) is abandoned after this"
    )
    jitter: Duration = Field(
        0.0, description="random delay up to this long before each host, to spread the load"
    )
    min_hosts: int | None = Field(
        None,
        ge=0,
        description="the run fails when fewer hosts than this hold the current token after it "
        "(default: all of them)",
    )
    recopy_after: Duration = Field(
        43200.0,
        description="copy again to a host that already holds the current token after this long "
        "(a reboot may have wiped its /tmp); 0 copies on every run",
    )

    @field_validator("host_pattern")
    @classmethod
    def _pattern_expands(cls, value: str | None) -> str | None:
        if value is not None:
            expand_host_pattern(value)
        return value

    @field_validator("ssh_options")
    @classmethod
    def _no_batchmode_override(cls, value: list[str]) -> list[str]:
        for arg in value:
            if "batchmode" in arg.lower().replace(" ", ""):
                raise ValueError(
                    "ssh_options may not set BatchMode: the copy must never wait for a password"
                )
        return value

    def all_hosts(self) -> list[str]:
        """``hosts`` then the expanded ``host_pattern``, each name once, in order."""
        names = list(self.hosts)
        if self.host_pattern:
            names += expand_host_pattern(self.host_pattern)
        return list(dict.fromkeys(names))

    @model_validator(mode="after")
    def _min_hosts_possible(self) -> Targets:
        if self.min_hosts is not None and self.min_hosts > len(self.all_hosts()):
            raise ValueError(
                f"min_hosts is {self.min_hosts} but only {len(self.all_hosts())} hosts are listed"
            )
        return self


class AliEnTokenSpec(StrictModel):
    """Keep a JAliEn token valid (renew with alien-token-init) and copy it where jobs find it."""

    cert_path: PathText = Field(
        "/tmp/tokencert_$UID.pem",
        description="the token certificate alien-token-init writes (validity is read from it)",
    )
    key_path: PathText = Field(
        "/tmp/tokenkey_$UID.pem", description="the token key alien-token-init writes"
    )
    renew_before: Duration = Field(
        86400.0,
        description="renew when less than this is left (tokens last 2 days by default)",
    )
    alert_before: Duration | None = Field(
        None,
        description="warn (and fail the run) while less than this is left, every run, until a "
        "renewal succeeds; at most renew_before (default: half of renew_before)",
    )
    force: StrictBool = Field(False, description="renew on every run, whatever is left")
    init_command: Argv = Field(
        default_factory=lambda: ["alien-token-init"],
        description="argv that creates a new token at cert_path/key_path",
    )
    wrapper: list[str] = Field(
        default_factory=list,
        description="argv prefix for init_command, e.g. "
        "['/cvmfs/alice.cern.ch/bin/alienv', 'setenv', 'JAliEn-ROOT/1.9.4-1', '-c']",
    )
    container: Container | None = Field(
        None,
        description="run wrapper + init_command in this container (e.g. shifter with "
        "extra_args ['--module=cvmfs'])",
    )
    env: EnvMap = Field(default_factory=dict, description="extra environment for init_command")
    init_timeout: Duration = Field(
        300.0, description="alien-token-init is killed after this and the renewal fails"
    )
    targets: Targets = Field(default_factory=Targets)

    @field_validator("renew_before")
    @classmethod
    def _renew_before_client_limit(cls, value: float) -> float:
        if value <= CLIENT_MIN_VALID_S:
            raise ValueError(
                "renew_before must be more than 10m: clients refuse a token with less than "
                "600 s left"
            )
        return value

    @model_validator(mode="after")
    def _alert_inside_renewal(self) -> AliEnTokenSpec:
        if self.alert_before is not None and self.alert_before > self.renew_before:
            raise ValueError(
                "alert_before must not exceed renew_before: the alert is for a token that "
                "renewal could not refresh"
            )
        return self

    @property
    def alert_window_s(self) -> float:
        """``alert_before``, or half of ``renew_before`` when not set."""
        return self.alert_before if self.alert_before is not None else self.renew_before / 2

    @field_validator("init_timeout")
    @classmethod
    def _positive_timeout(cls, value: float) -> float:
        if value < 1:
            raise ValueError("init_timeout must be at least 1s")
        return value


class AliEnTokenManifest(ManifestBase):
    kind: Literal["AliEnToken"]
    spec: AliEnTokenSpec
