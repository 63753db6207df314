"""Run history and per-job daemon state: the Store protocol and its SQLite implementation."""

from orchestrator.store.base import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    RunRecord,
    RunState,
    Store,
    Trigger,
)
from orchestrator.store.sqlite import SCHEMA_VERSION, SQLiteStore

__all__ = [
    "ACTIVE_STATES",
    "SCHEMA_VERSION",
    "TERMINAL_STATES",
    "RunRecord",
    "RunState",
    "SQLiteStore",
    "Store",
    "Trigger",
]
