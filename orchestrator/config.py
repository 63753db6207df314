"""The configuration file, ``orchestrator.toml``. Optional: without it every default holds.

Where the command line looks for it (first found): ``ORCH_CONFIG``, ``./orchestrator.toml``,
``~/.config/orchestrator/orchestrator.toml``; the daemon reads the one beside its jobs
directory (the same file when ``jobs_dir`` points next to it, as in the checkout and in
``~/.config/orchestrator``).

    jobs_dir = "jobs.d"      # relative to this file; a flag or ORCH_JOBS_DIR wins
    state_dir = ".state"     # relative to this file; a flag or ORCH_STATE_DIR wins

    [notify]                 # the default notify: block of every job (orchestrator.notify)
    on = ["failure", "recovery", "alert", "overdue"]
    urls = ["mailto://ops:${SMTP_PASSWORD}@smtp.example.org?to=oncall@example.org"]

TOML, not YAML, so that it is never mistaken for a manifest. The daemon reads it at start and
again whenever it changes (it looks at each rescan and reload); a file that does not validate
is reported (the daemon is degraded, ``status`` says why) and the last good one stays in effect.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field, ValidationError

from orchestrator.errors import OrchestratorError
from orchestrator.manifests.fields import StrictModel
from orchestrator.notify.model import Notify

CONFIG_NAME = "orchestrator.toml"
MAX_BYTES = 1024 * 1024


class ConfigError(OrchestratorError):
    """The configuration file could not be read or does not validate."""


class DaemonConfig(StrictModel):
    jobs_dir: str | None = Field(None, description="the jobs directory, relative to this file")
    state_dir: str | None = Field(None, description="the state directory, relative to this file")
    notify: Notify | None = Field(None, description="every job's notify: defaults")


def config_path(jobs_dir: Path) -> Path:
    """The daemon's: ``ORCH_CONFIG``, else ``orchestrator.toml`` in the jobs directory's parent."""
    named = os.environ.get("ORCH_CONFIG")
    return Path(named).expanduser().absolute() if named else jobs_dir.parent / CONFIG_NAME


def find_config() -> Path | None:
    """The command line's: ``ORCH_CONFIG``, ``./orchestrator.toml``, then the one in
    ``$XDG_CONFIG_HOME/orchestrator`` (``~/.config/orchestrator``); None when none exists."""
    named = os.environ.get("ORCH_CONFIG")
    if named:
        return Path(named).expanduser().absolute()
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    for candidate in (Path.cwd() / CONFIG_NAME, Path(xdg) / "orchestrator" / CONFIG_NAME):
        if candidate.is_file():
            return candidate.absolute()
    return None


def paths_from(path: Path) -> tuple[Path | None, Path | None]:
    """The jobs and state directories a configuration file names (relative to its folder)."""
    loaded = load(path)

    def resolve(value: str | None) -> Path | None:
        if not value:
            return None
        given = Path(os.path.expandvars(value)).expanduser()
        return given if given.is_absolute() else path.parent / given

    return resolve(loaded.jobs_dir), resolve(loaded.state_dir)


def _line_of(text: str, loc: tuple[object, ...]) -> int | None:
    """The line that sets the field at ``loc`` (a table and a key), for the message."""
    table = None
    keys = [str(p) for p in loc if isinstance(p, str)]
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("["):
            table = line.strip("[] ")
            if keys and table == keys[0] and len(keys) == 1:
                return number
        elif "=" in line and keys:
            key = line.split("=", 1)[0].strip().strip('"')
            if (len(keys) == 1 and table is None and key == keys[0]) or (
                len(keys) > 1 and table == keys[0] and key == keys[1]
            ):
                return number
    return None


def load(path: Path) -> DaemonConfig:
    """The file's settings (the defaults when there is no file)."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return DaemonConfig()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_BYTES // 1024} KiB; is it the right file?")
    text = data.decode("utf-8", "replace")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return DaemonConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            where = ".".join(str(p) for p in loc)
            line = _line_of(text, loc)
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown setting"
            lines.append(f"{path}:{line or 1}: {where}: {msg}")
        raise ConfigError("\n".join(lines)) from None


@dataclass
class ConfigFile:
    """The file in effect, re-read when its size or mtime changes."""

    path: Path
    current: DaemonConfig = field(default_factory=DaemonConfig)
    error: str | None = None
    _stamp: tuple[int, int] | None = None

    def refresh(self) -> bool:
        """Re-read the file if it changed; True when the settings in effect changed. A bad
        file sets ``error`` and keeps the last good settings."""
        try:
            st = self.path.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp == self._stamp and self._stamp is not None:
            return False
        self._stamp = stamp
        try:
            loaded = load(self.path)
        except ConfigError as exc:
            self.error = str(exc)
            return False
        self.error = None
        changed = loaded != self.current
        self.current = loaded
        return changed
