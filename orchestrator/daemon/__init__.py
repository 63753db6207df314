"""The daemon, one module per concern:

- ``events``: the typed events other threads post to the main loop.
- ``loop``: :class:`Daemon`: start-up, the main loop, drain, shutdown.
- ``state``: what the parts share, and the guard every step runs under.
- ``reconcile``: the jobs on disk -> the jobs in effect and their schedules (catch-up, fires).
- ``admission``: start / skip / defer one run (a pure function), ``requires:`` validity.
- ``supervision``: runs from record to end on their executor (dispatch, poll, finish, adopt).
- ``followups``: retries, ``after`` triggers, runs waiting for a required job.
- ``control``: control-socket requests and ``status``.
"""

from __future__ import annotations

from .loop import Daemon, default_executors
from .supervision import DeferredError

__all__ = ["Daemon", "DeferredError", "default_executors"]
