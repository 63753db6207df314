"""Per-stage wall time and peak memory of one whole 4088^2 pair through the photometry pipeline.

Prints figures, asserts nothing. The pair is what ``orchestrator photometry run --cutout 0``
processes (same :func:`orchestrator.dia.pipeline.pair.process_pair`, same configuration), on a
``photometry simulate`` data set (one science epoch, one template) written once under
``--data`` and reused. The pair runs in a fresh subprocess, as the CLI's would: the figures
include the imports and numba's cache loading (run the script twice after changing a kernel;
the first run also compiles). Stages are timed exclusively (a stage nested in another, as the
background of the PSF region, counts for itself only) by wrapping the pipeline's functions:

    imports      orchestrator.dia.pipeline.pair and orchestrator.dia
    read         FitsImage.read (pixels, variance, mask) and the PSF files
    background   background mesh, estimate_variance, inpaint
    psf          the PSF models (everything in _psf_for not counted above)
    resample     pixel_map + resample (template onto the science grid)
    subtract     dia.subtract (kernel fit and difference)
    decorrelate  Subtraction.decorrelate
    photometry   photometry_psf + forced_photometry
    other        the rest of process_pair (crops, masks)

Peak RSS is VmHWM from /proc/self/status (numpy and numba buffers included): after each
stage, the process's peak so far.

    .venv/bin/python benchmarks/photometry_stages.py [--size 4088] [--data DIR] [--repo DIR]
        [--repeat N] [--no-peer]

``--repeat N`` runs the pair N times in the one process (the prepared-exposure cache emptied
each time) and prints each one's wall, user and system time and peak: the first pair pays for
every fresh page of memory, later ones show the steady state of a worker that runs many pairs.
The child sets its memory up as ``photometry run``'s processes do (freed memory kept, no
huge-page advice: :mod:`orchestrator.dia.pipeline.memory`); ``ORCH_DIA_KEEP_MEMORY=0`` measures
glibc's and NumPy's defaults instead.

``--repo`` runs another checkout's pipeline (``git worktree add /tmp/before COMMIT``) for
before/after figures on the same data.

Then the Roman SN PIT's flow (``benchmarks/sfft_peer.py``: sfft-romansnpit's CPU backend as
phrosty drives it, fit mask and PSF placement fixed) runs on the same pair in its own
subprocess: wall time, peak memory, and for both the supernova's flux against the truth table
(pull = (flux - true) / sigma), forced-photometry and fit chi2, kernel sum. The peer needs
several times our memory (over 20 GB at 4088^2): unless ``--peer-size`` says, it first runs on
centred 512^2 and 1024^2 crops, fits peak memory = a + b N^2, and runs on the largest centred
crop (a multiple of 128) predicted to fit in 80 % of the memory available then, stepping down
if it still fails; the line says which size ran. ``--no-peer`` skips it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
STAGES = (
    "imports",
    "read",
    "background",
    "psf",
    "resample",
    "subtract",
    "decorrelate",
    "photometry",
    "other",
)


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ensure_data(data: Path, size: int) -> Path:
    """A one-epoch, one-template ``photometry simulate`` set of ``size``^2 images in ``data``."""
    if not (data / "object.json").exists():
        data.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "orchestrator",
            "photometry",
            "simulate",
            "--out",
            str(data),
            "--size",
            str(size),
            "--epochs",
            "1",
            "--templates",
            "1",
        ]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return data


def child(data: Path, repo: Path, repeat: int = 1, backend: str = "cpu") -> dict[str, Any]:
    """Run the pair in this (fresh) process with every stage wrapped; the figures as a dict.
    ``repeat > 1`` runs it again that many times less one (the prepared-exposure cache
    emptied first, so each is a whole pair): wall, user and system time and peak of each."""
    started = time.perf_counter()
    sys.path.insert(0, str(repo))  # ahead of the editable install: another checkout can run
    memory_kept = False
    try:  # as `photometry run` does (an older checkout, --repo, may not have it)
        from orchestrator.dia.pipeline.memory import tune_for_run

        memory_kept = tune_for_run()
    except ImportError:
        if repeat > 1:  # what the CLI did before tune_for_run, for runs of several pairs
            try:
                from orchestrator.dia.pipeline.memory import keep_freed_memory

                memory_kept = keep_freed_memory()
            except ImportError:
                pass
    from orchestrator import dia
    from orchestrator.dia import io as dia_io
    from orchestrator.dia.pipeline import measure, pair

    times: dict[str, float] = defaultdict(float)
    peaks: dict[str, float] = {}
    times["imports"] = time.perf_counter() - started
    peaks["imports"] = vm_hwm_mb()
    stack: list[list[Any]] = []  # [stage, start, time of nested stages]

    def timed(stage: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            stack.append([stage, time.perf_counter(), 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                name, t0, nested = stack.pop()
                elapsed = time.perf_counter() - t0
                times[name] += elapsed - nested
                if stack:
                    stack[-1][2] += elapsed
                peaks[name] = vm_hwm_mb()

        return wrapper

    wrap = {
        "read": [(dia_io.FitsImage, "read"), (pair, "read_psf_image")],
        "background": [(pair, "background"), (pair, "estimate_variance"), (pair, "inpaint")],
        "psf": [(pair, "_psf_for")],
        "resample": [(measure, "pixel_map"), (measure, "resample")],
        "subtract": [(dia, "subtract")],
        "decorrelate": [(dia.Subtraction, "decorrelate")],
        "photometry": [(measure, "photometry_psf"), (dia, "forced_photometry")],
        "other": [(pair, "process_pair")],
    }
    for stage, targets in wrap.items():
        for owner, name in targets:
            setattr(owner, name, timed(stage, getattr(owner, name)))
    fit_stats: list[Any] = []
    subtract = dia.subtract

    def keep_stats(*args: Any, **kwargs: Any) -> Any:
        result = subtract(*args, **kwargs)
        fit_stats.append(result.stats)
        return result

    dia.subtract = keep_stats

    obj = json.loads((data / "object.json").read_text())
    science = dia_io.read_list(data / "science.txt", obj["band"])[0]
    template = dia_io.read_list(data / "templates.txt", obj["band"])[0]
    config = pair.PipelineConfig(
        oid=str(obj["oid"]),
        ra=float(obj["ra"]) % 360.0,
        dec=float(obj["dec"]),
        band=obj["band"],
        outdir=data / "out",
        backend=backend,
        cutout_px=0,
    )
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")  # as `photometry run` does (orchestrator.dia.cli)
    t0 = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    row = pair.process_pair(config, science, template)
    pair_s = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    runs = [(pair_s, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime, vm_hwm_mb())]
    first_times, first_peaks, total_s = dict(times), dict(peaks), time.perf_counter() - started
    subtract_s = [first_times.get("subtract", 0.0)]
    for _ in range(repeat - 1):
        pair._cache.clear()
        before = times.get("subtract", 0.0)
        t1, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        pair.process_pair(config, science, template)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        runs.append(
            (
                time.perf_counter() - t1,
                r1.ru_utime - r0.ru_utime,
                r1.ru_stime - r0.ru_stime,
                vm_hwm_mb(),
            )
        )
        subtract_s.append(times["subtract"] - before)
    return {
        "memory_kept": memory_kept,
        "runs": runs,
        "subtract_s": subtract_s,
        "times": first_times,
        "peaks": first_peaks,
        "pair_s": pair_s,
        "total_s": total_s,
        "peak_mb": runs[0][3],
        "success": row["success"],
        "error": row["error"],
        "flux": row["flux"],
        "flux_err": row["flux_err"],
        "chi2": row["chi2_dof"],
        "fit_chi2": row["fit_chi2_dof"],
        "ksum": row["kernel_sum"],
        "true": true_flux(data, science.path),
        "fit": [
            {
                "timings": st.timings_s,
                "n_fit": st.n_fit_pixels,
                "n_rows": st.n_corrected_pixels,
                "steps": st.solve_iterations,
            }
            for st in fit_stats
        ],
    }


def true_flux(data: Path, science_path: Path) -> float:
    """The supernova's true flux in ``science_path`` from the data set's truth table, or NaN."""
    from orchestrator.dia.pipeline.truth import read_truth

    if not (data / "truth.csv").exists():
        return float("nan")
    match = read_truth(data / "truth.csv").match(science_path)
    return match.true_flux if match else float("nan")


def quality(r: dict[str, Any]) -> str:
    """The supernova's figures on the pair, one line."""
    pull = (r["flux"] - r["true"]) / r["flux_err"]
    return (
        f"flux {r['flux']:.6g} +- {r['flux_err']:.3g} (true {r['true']:.6g}, pull {pull:+.2f}), "
        f"chi2 {r['chi2']:.2f}, fit chi2 {r['fit_chi2']:.2f}, kernel sum {r['ksum']:.4f}"
    )


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peer(data: Path, full: int, size: int | None) -> None:
    """The sfft-romansnpit flow on the same pair, at ``size`` or the largest crop that fits."""
    from benchmarks.sfft_peer import mask_note, run_peer

    def show(run: Any, note: str) -> None:
        r = run.rows[0]
        print(f"sfft-romansnpit flow (CPU), {run.size}^2 {note}")
        print(f"{'total':<12} {run.wall_s:8.2f} {run.peak_mb:12.0f}   pair {r['pair_s']:.2f} s")
        if r["success"]:
            print(f"{quality({**r, 'flux_err': r['err']})}; {mask_note(run.rows)}")
        else:
            print(f"failed: {r['error']}")

    if size is None:
        calib = {n: run_peer(data, "files", crop=n) for n in (512, 1024)}
        if any(c.error or not c.rows for c in calib.values()):
            print(f"sfft-romansnpit flow: calibration failed: {calib[512].error[-500:]}")
            return
        b = (calib[1024].peak_mb - calib[512].peak_mb) / (1024**2 - 512**2)
        a = calib[512].peak_mb - b * 512**2
        budget = 0.8 * mem_available_mb()
        need_full = a + b * full**2
        size = full if need_full <= budget else int(((budget - a) / b) ** 0.5) // 128 * 128
        why = (
            f"(peak {calib[512].peak_mb:.0f} MB at 512^2, {calib[1024].peak_mb:.0f} MB at "
            f"1024^2: {full}^2 would need ~{need_full / 1024:.0f} GB, 80 % of the memory "
            f"available now is {budget / 1024:.1f} GB)"
        )
    else:
        why = "(size asked for)"
        calib = {}
    while size >= 256:
        run = calib.get(size) or run_peer(data, "files", crop=None if size >= full else size)
        if not run.error and run.rows:
            crop = "whole pair" if size >= full else f"centred crop of the {full}^2 pair"
            show(run, f"{crop} {why}")
            return
        print(f"sfft-romansnpit flow at {size}^2 failed: {run.error[-300:]}")
        size -= 128
        why = "(stepped down after a failure)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4088)
    parser.add_argument("--data", type=Path, default=None, help="data set folder (reused)")
    parser.add_argument(
        "--repo", type=Path, default=REPO, help="checkout whose orchestrator runs (before/after)"
    )
    parser.add_argument("--no-peer", action="store_true", help="skip the sfft-romansnpit flow")
    parser.add_argument("--peer-size", type=int, default=None, help="the peer's crop (pixels)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="pairs in the one process (steady state)"
    )
    parser.add_argument(
        "--backend", default="cpu", choices=["cpu", "gpu", "auto"], help="subtraction backend"
    )
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.repo, args.repeat, args.backend)))
        return
    data = ensure_data(args.data or Path(f"/tmp/photometry_stages_{args.size}"), args.size)
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            str(data),
            "--repo",
            str(args.repo.resolve()),
            "--repeat",
            str(args.repeat),
            "--backend",
            args.backend,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    fig = json.loads(out.strip().splitlines()[-1])
    print(f"whole {args.size}^2 pair (--cutout 0, {args.backend} backend), data {data}")
    print(f"code {args.repo}")
    print(f"{'stage':<12} {'wall s':>8} {'peak RSS MB':>12}")
    for stage in STAGES:
        if stage in fig["times"]:
            print(f"{stage:<12} {fig['times'][stage]:8.2f} {fig['peaks'].get(stage, 0):12.0f}")
    for idx, one in enumerate(fig.get("fit", [])):
        parts = ", ".join(f"{k} {v:.2f}" for k, v in one["timings"].items())
        print(
            f"  subtract{'' if idx == 0 else f' (pair {idx + 1})'}: {parts} s ({one['n_fit']} fit "
            f"pixels, {one['n_rows']} design rows, {one['steps']} conjugate-gradient steps)"
        )
    print(f"{'pair':<12} {fig['pair_s']:8.2f}")
    print(f"{'total':<12} {fig['total_s']:8.2f} {fig['peak_mb']:12.0f}")
    kept = "kept, no huge-page advice" if fig.get("memory_kept") else "the libraries' defaults"
    for k, (wall, user, system, peak) in enumerate(fig.get("runs", [])):
        sub = fig["subtract_s"][k]
        print(
            f"pair {k + 1}: {wall:6.2f} s wall (subtract {sub:5.2f}), {user:6.2f} s user, "
            f"{system:5.2f} s system, peak {peak:5.0f} MB (memory: {kept})"
        )
    if fig["success"]:
        print(quality(fig))
    else:
        print(f"failed: {fig['error']}")
    if not args.no_peer:
        print()
        sys.path.insert(0, str(REPO))
        peer(data, args.size, args.peer_size)


if __name__ == "__main__":
    main()
