"""mode: cvmfs — promote the newest published daily tag that passes the probe.

Order of a run, each step able to stop it with the pointer untouched: lock the job; read the
state; check the pointer paths; list the tags; probe candidates newest first (at most
``max_probes``), recording each failure as rejected; promote the first that passes (pointer
first, then the state, so a crash in between re-probes and re-promotes the same tag).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.containers import render_command
from orchestrator.durations import format_duration
from orchestrator.tasks.o2sync import proc
from orchestrator.tasks.o2sync.context import Context, command_env, say
from orchestrator.tasks.o2sync.errors import O2SyncError
from orchestrator.tasks.o2sync.pointer import PointerFiles, enter_line
from orchestrator.tasks.o2sync.spec import O2SyncSpec
from orchestrator.tasks.o2sync.state import JobState, expand_path, job_lock
from orchestrator.tasks.o2sync.tags import candidates, list_tags, modulefile_dir

REASON_CHARS = 1500


def probe_argv(spec: O2SyncSpec, root: Path, tag: str) -> list[str]:
    values = {"package": spec.package, "tag": tag, "arch": spec.arch, "cvmfs_root": str(root)}
    return [arg.format_map(values) for arg in spec.probe]


def run_probe(spec: O2SyncSpec, root: Path, tag: str) -> proc.Completed:
    argv, env = render_command(spec.container, probe_argv(spec, root, tag), command_env(spec), None)
    say(f"probe {tag}: {' '.join(argv)}")
    return proc.run(argv, timeout_s=spec.probe_timeout, env=env)


def sync_cvmfs(spec: O2SyncSpec, ctx: Context) -> dict[str, Any]:
    assert spec.pointer is not None  # the spec's validator requires it in mode cvmfs
    root = expand_path(spec.cvmfs_root, "cvmfs_root")
    pointer = PointerFiles(spec.pointer, root, spec.arch, spec.package)
    with job_lock(ctx.state_dir, ctx.job):
        state = JobState(ctx.state_dir)
        pointer.check()
        current = state.current or pointer.current()
        result: dict[str, Any] = {
            "mode": "cvmfs",
            "package": spec.package,
            "previous": current,
            "promoted": None,
            "current": current,
            "rejected": [],
        }
        listing_dir = modulefile_dir(root, spec.arch, spec.package)
        try:
            listing = list_tags(root, spec.arch, spec.package)
        except OSError as exc:
            raise O2SyncError(
                f"cannot list tags in {listing_dir}: {exc.strerror or exc}. Is CVMFS mounted "
                f"(ls {root}) and are cvmfs_root, arch and package right? The pointer was "
                "not changed",
                "no_listing",
                **result,
            ) from exc
        result["incomplete"] = listing.incomplete
        if not listing.complete:
            raise O2SyncError(
                f"no daily tags with a payload under {listing_dir} (announced without payload: "
                f"{', '.join(listing.incomplete) or 'none'}); the pointer was not changed",
                "no_tags",
                **result,
            )
        newest = listing.complete[-1].text
        result["newest"] = newest
        say(
            f"{spec.package}: current {current or '(none)'}, newest published {newest}, "
            f"{len(listing.complete)} tags listed"
            + (f", {len(listing.incomplete)} without payload" if listing.incomplete else "")
        )
        rejected_before = state.rejected
        todo = candidates(listing.complete, current, set(rejected_before))
        skipped = [t.text for t in listing.complete if t.text in rejected_before]
        result["skipped_rejected"] = [t for t in skipped if t not in (current,)]
        if current and pointer.missing():
            pointer.write(current, ctx.job)
            say(f"pointer was missing: rewritten for {current}")
        if not todo:
            result["alienv"] = enter_line(root, spec.package, current) if current else None
            result["summary"] = f"up to date: {spec.package} {current}" + (
                f" (newer tags rejected before: {', '.join(skipped)})"
                if any(s != current for s in skipped)
                else ""
            )
            return staleness(spec, state, result)

        for tag in todo[: spec.max_probes]:
            done = run_probe(spec, root, tag.text)
            if done.ok:
                say(f"probe {tag.text}: passed")
                written = pointer.write(tag.text, ctx.job)
                state.promote(tag.text, spec.keep, ctx.run_id)
                say(f"promoted {tag.text} (previous {current or 'none'}): {', '.join(written)}")
                result.update(
                    promoted=tag.text,
                    current=tag.text,
                    alienv=enter_line(root, spec.package, tag.text),
                    pointer=written,
                    kept=[p["tag"] for p in state.promoted],
                )
                break
            reason = done.describe()[-REASON_CHARS:]
            say(f"probe {tag.text}: FAILED, tag rejected\n{reason}")
            state.reject(tag.text, reason, ctx.run_id)
            result["rejected"].append({"tag": tag.text, "reason": reason})

        rejected_tags = [r["tag"] for r in result["rejected"]]
        if result["promoted"] is None:
            left = len(todo) - spec.max_probes
            raise O2SyncError(
                f"no tag promoted: {', '.join(rejected_tags)} failed verification and "
                f"{'are' if len(rejected_tags) > 1 else 'is'} now skipped; the pointer still "
                f"names {current or 'nothing'}. See the probe output above; once the tag is "
                f"fixed, `orchestrator o2 unreject {ctx.job} TAG` lets the next run retry it"
                + (f" ({left} older candidates are left for the next run)" if left > 0 else ""),
                "verification_failed",
                **result,
            )
        result["summary"] = f"promoted {result['promoted']} (previous {current or 'none'})" + (
            f"; rejected {', '.join(rejected_tags)}" if rejected_tags else ""
        )
        return staleness(spec, state, result)


def staleness(spec: O2SyncSpec, state: JobState, result: dict[str, Any]) -> dict[str, Any]:
    """The pointer's age (since this job promoted the tag it names) into the result, and an
    alert when it is older than ``stale_after``: users' jobs have been reading the same build
    for a week, and nothing failed loudly (no tag newer was published, or each was rejected)."""
    current = result.get("current")
    promoted_at = next(
        (p.get("at") for p in reversed(state.promoted) if p.get("tag") == current), None
    )
    if not current or not isinstance(promoted_at, str):
        return result  # a pointer this job did not set: its age is unknown
    age_s = (datetime.now(UTC) - datetime.fromisoformat(promoted_at)).total_seconds()
    result.update(pointer_since=promoted_at, pointer_age_s=int(age_s))
    if spec.stale_after is not None and age_s > spec.stale_after:
        result["alert"] = True
        result["warning"] = (
            f"the pointer has named {current} since {promoted_at} ({format_duration(int(age_s))}), "
            f"longer than stale_after ({format_duration(spec.stale_after)}): newest published "
            f"{result.get('newest') or 'unknown'}"
        )
        result["summary"] = f"STALE: {result['summary']}"
        say(f"WARNING: {result['warning']}")
    return result
