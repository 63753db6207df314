"""A crash campaign against a real daemon, and an audit of what it recorded.

The campaign (``run_campaign``) starts a real ``orchestrator run`` (``DaemonHarness``) with two
``every: 1s`` jobs whose command is ``JOB_SCRIPT``: it appends ``start`` and ``end`` lines, with
the run id the daemon gave it (``$ORCH_RUN_ID``) and the wall-clock time, to a side-effect file
opened with ``O_APPEND``, sleeps a short random time and exits 0 (or 1, now and then, so that
retries happen without kills too):

- ``chaos-forbid``: ``concurrency: forbid``, ``retries: 2``, ``retry_backoff: 1s``,
  ``catchup: 30s`` (a restart runs the newest missed fire and records the rest ``missed``);
- ``chaos-allow``: ``concurrency: allow``, ``retries: 1``, no catch-up window (every missed fire
  is recorded ``missed``); its runs often outlive the interval, so several run at once.

Each cycle sleeps a random short time, then sends ``SIGKILL`` to one of: the daemon (restarted
after a random short down time; in half of these cycles the new daemon is killed again within
0.15 s of its ``daemon_starting`` line, while it adopts runs and catches up missed fires), a random
live run shim, or a random live job child (its whole process group).
Victims are found in ``/proc`` by their command lines, not through the daemon's bookkeeping, so
a shim still starting (its run ``pending``) can be hit too. After the last cycle the daemon is
brought up, both manifests are rewritten with ``every: 1h`` (a schedule change: the 1 s grid
ends there, nothing fires for an hour, and promised retries still run; a suspended job's retries
would be dropped), the campaign waits until no run is active and no retry is pending, stops the
daemon with SIGTERM, and audits.

The audit (``audit.audit``) compares the store with the jobs' side effects and the log;
``audit.py``'s docstring defines each figure it counts. The modules:

- ``jobs``: the two jobs' plans, manifests and the side-effect script they run;
- ``records``: the plain rows the audit reads, and their readers (store, side-effect file,
  log);
- ``audit``: the pure audit over those rows;
- ``kills``: finding victims in ``/proc`` and killing them;
- ``run``: the campaign itself (cycles, settle, clean stop), ``run_campaign`` and
  ``stop_leftovers``;
- ``report``: the campaign's result, its figures and its findings with the log around them.
"""
