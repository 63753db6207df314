"""Daemon settings: flags, then ORCH_* environment, then defaults."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import OrchestratorError


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def default_jobs_dir() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / "orchestrator" / "jobs.d"


def default_state_dir() -> Path:
    return _xdg("XDG_STATE_HOME", ".local/state") / "orchestrator"


class SettingsError(OrchestratorError, ValueError):
    """An ORCH_* variable holds a value that is not a setting."""


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise SettingsError(
            f"{name}={value!r} is not a number of seconds; use a number >= 0 such as "
            f"{default:g}, or unset it for the default"
        )
    return number


@dataclass(frozen=True)
class Settings:
    jobs_dir: Path
    state_dir: Path
    rescan_interval_s: float = 30.0
    debounce_s: float = 0.05
    drain_grace_s: float = 30.0
    heartbeat_s: float = 10.0
    force_polling: bool = False
    # An invalid manifest changed less than this long ago is not reported yet: it may still be
    # being written (a slow scp, NFS); the daemon looks again once it has been left alone.
    settle_s: float = 2.0
    # Prometheus metrics in node-exporter's textfile format, rewritten at each heartbeat
    metrics_textfile: Path | None = None
    # HOST:PORT of the HTTP listener (/metrics and the status page); None: no listener
    http_address: str | None = None

    @classmethod
    def resolve(
        cls, jobs_dir: Path | str | None = None, state_dir: Path | str | None = None
    ) -> Settings:
        """Flags win over ORCH_JOBS_DIR / ORCH_STATE_DIR, which win over the configuration
        file (orchestrator.config.find_config: ./orchestrator.toml, ...), which wins over the
        XDG defaults."""
        jobs = jobs_dir or os.environ.get("ORCH_JOBS_DIR") or None
        state = state_dir or os.environ.get("ORCH_STATE_DIR") or None
        if jobs is None or state is None:
            from orchestrator.config import ConfigError, find_config, paths_from

            found = find_config()
            if found is not None:
                try:
                    named_jobs, named_state = paths_from(found)
                except ConfigError as exc:
                    raise SettingsError(str(exc)) from exc
                jobs = jobs or named_jobs
                state = state or named_state
        jobs = jobs or default_jobs_dir()
        state = state or default_state_dir()
        return cls(
            jobs_dir=Path(jobs).expanduser().absolute(),
            state_dir=Path(state).expanduser().absolute(),
            rescan_interval_s=env_float("ORCH_RESCAN_INTERVAL_S", 30.0),
            debounce_s=env_float("ORCH_DEBOUNCE_S", 0.05),
            drain_grace_s=env_float("ORCH_DRAIN_GRACE_S", 30.0),
            heartbeat_s=env_float("ORCH_HEARTBEAT_S", 10.0),
            force_polling=os.environ.get("ORCH_FORCE_POLLING", "") not in ("", "0"),
            settle_s=env_float("ORCH_SETTLE_S", 2.0),
            metrics_textfile=Path(textfile).expanduser().absolute()
            if (textfile := os.environ.get("ORCH_METRICS_TEXTFILE"))
            else None,
            http_address=os.environ.get("ORCH_HTTP_ADDRESS") or None,
        )
        # Each executor reads its own ORCH_<NAME>_* settings when the registry builds it
        # (executors/registry.py), so that this module knows none of them.

    @property
    def db_path(self) -> Path:
        return self.state_dir / "runs.sqlite"

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    @property
    def control_socket(self) -> Path:
        """The daemon's control socket, always in the (private, 0700) state directory.

        A state directory too deep for an AF_UNIX path (107 bytes) keeps it there too:
        orchestrator.control reaches it through the opened directory. The earlier fallback,
        a predictable name in /tmp, let another local user create that name first (issue 8).
        """
        return self.state_dir / "control.sock"
