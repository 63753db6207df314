"""The Roman SN PIT's subtraction flow (``sfft-romansnpit``, CPU backend) as a side-by-side peer.

Issue 9 compares our photometry with the PIT's own method on the same scenes. This is our
driver of that method (no code copied from phrosty or sfft): it calls sfft-romansnpit's public
``SpaceSFFT_Flow`` step by step the way phrosty's ``Pipeline`` does (``phrosty/pipeline.py``:
``sky_sub_all_images``, ``get_psfs``, ``align_and_pre_convolve``, ``sfft_subtract``,
``find_decorrelation``, ``create_variance_image``, ``apply_decorrelation``, then forced PSF
photometry with photutils on a 100 x 100 stamp as ``phot_at_coords`` and snappl's
``Image.psf_phot`` do), with phrosty's settings: kernel half-width 9, kernel polynomial order 2
(``photometry.phrosty.kerpolyorder``), background order 0, constant photometric ratio, the
template resampled onto the science grid, PSF stamps normalised to sum 1, photometry with a
5 x 5 fit, a 15-25 px MMM local background and the stamp's variance from the flow.

Two fixes, and only those (issue 9: run as phrosty runs it, the flow is far off):

1. Fit mask. phrosty's mask is SExtractor's detection mask cut to sources with
   ``FLUX_RADIUS > 2`` px (``RADIUS_CUT_DETMASK``) and dilated twice, so the supernova and its
   host, and the clipped cores of saturated stars, sit in the fit. Here a source that touches a
   bad pixel (DQ != 0: saturated, hot, dead) leaves the mask whole, everything within
   ``BAD_GROW_PX`` of it and of other bad pixels too, and so does a ``SN_CLEAR_PX`` disc around
   the object, in both images.
2. PSF placement. phrosty renders each PSF stamp at the object's sub-pixel position, and then
   photutils shifts the decorrelated PSF (their convolution) to that sub-pixel position again.
   Here the stamps are rendered the same way and the fit puts the PSF's centre on the stamp
   pixel nearest to the object: the sub-pixel shift counts once.

SExtractor itself is a binary this project does not install; its steps in phrosty's sky
subtraction (``SEx_SkySubtract.SSS``: 64 px mesh, 3 x 3 filter, 1.5 sigma, 5 px, deblending
0.005, flux radius cut 2 px, two dilations, sky from the masked image) are done with ``sep``
(SExtractor's code as a library, a dependency of sfft-romansnpit). PSF files (mode ``files``,
the lists' ``psf`` column) are rendered as snappl's ``get_stamp`` renders phrosty's PSFs: on
native pixels, over the file's whole extent, at the object's sub-pixel phase (cubic spline on
the oversampled grid; an instrumental file, ``PIXCONV = F``, is integrated over the pixel
first). Estimated PSFs (mode ``estimated``) come from photutils' ``EPSFBuilder`` (defaults, 4x
oversampled) on the 50 brightest isolated, unflagged stars, rendered the same way (25 px).

Each mode runs in a fresh subprocess (``NUMBA_NUM_THREADS`` = the CPUs, since sfft's own
thread setting is an assignment; ``OPENBLAS_NUM_THREADS=1``); its wall time and peak memory
(the kernel's RSS high-water mark, VmHWM, from ``wait4``) are the figures. Not done: the FITS
products phrosty writes and the decorrelated zero-point image (photometry does not use it).
Not timed: the fit chi2 diagnostic in ``subtract_pair`` (its time is subtracted). An image
that cannot be read fails its own rows.

    .venv/bin/python benchmarks/sfft_peer.py SCENE [--modes files estimated] [--crop N]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script (the child), benchmarks/ is not on the path
from benchmarks.sfft_peer_prep import (  # noqa: E402
    KER_HW,
    fixed_fit_mask,
    psf_from_file,
    psf_from_stars,
    sky_subtract,
)

MODES = ("files", "estimated")
KER_POLY_ORDER = 2  # phrosty's config (kerpolyorder)
STAMP_PX = 100  # phrosty's photometry stamps
FIT_SHAPE, BKG_ANNULUS_PX, AP_R_PX = (5, 5), (15.0, 25.0), 3.0  # snappl's psf_phot, phrosty


# Forks the measured command from a small fresh process: Linux's ru_maxrss of a child counts
# the memory of the process it was forked from (recorded at exec), so forking it from a parent
# that holds scenes or GalSim would report the parent's size. Exit code passed through.
_LAUNCHER = """import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def _oom_victim() -> None:
    # a peer that outgrows the machine is the one the kernel's OOM killer should pick
    Path("/proc/self/oom_score_adj").write_text("1000")


def run_measured(
    argv: list[str], timeout_s: float, env: dict[str, str] | None = None, oom_victim: bool = False
) -> dict[str, Any]:
    """Run ``argv``; wall seconds, exit code (128 + N when killed by signal N), peak RSS (MB: the
    kernel's RSS high-water mark, VmHWM, of the command and its reaped children) and the tail
    of its stderr. Killed with its process group after ``timeout_s``."""
    with tempfile.TemporaryDirectory(prefix="measured_") as tmp:
        peak_file, err_file = Path(tmp) / "peak", Path(tmp) / "stderr"
        with err_file.open("wb") as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER, str(peak_file), *argv],
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
                preexec_fn=_oom_victim if oom_victim else None,  # inherited by the command
            )
            timer = threading.Timer(timeout_s, os.killpg, (proc.pid, signal.SIGKILL))
            timer.start()
            try:
                rc = proc.wait()
            finally:
                timer.cancel()
            wall_s = time.perf_counter() - t0
        tail = err_file.read_bytes().decode(errors="replace")[-3000:]
        peak_kb = float(peak_file.read_text()) if peak_file.exists() else float("nan")
    return {"wall_s": wall_s, "rc": rc, "peak_mb": peak_kb / 1024, "tail": tail}


@dataclass
class PeerRun:
    """One mode of the peer over a scene: rows in ``figures()``'s shape, time and memory."""

    mode: str
    rows: list[dict[str, Any]]
    wall_s: float  # the subprocess, imports included, diagnostics excluded
    peak_mb: float
    size: int  # the side of the (cropped) images
    error: str = ""


def run_peer(scene: Path, mode: str, crop: int | None = None, timeout_s: float = 7200) -> PeerRun:
    """Run the peer over every science x template pair of ``scene`` in a fresh subprocess."""
    env = dict(os.environ)
    # sfft assigns to numba.set_num_threads instead of calling it: only the environment works
    env.setdefault("NUMBA_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    # OpenBLAS threads spin between calls: thousands of tiny SVDs in photutils' ePSF fits then
    # crawl on a loaded machine (1-2 minutes an image instead of 3 s)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="sfft_peer_") as tmp:
        out = Path(tmp) / "rows.json"
        argv = [sys.executable, str(Path(__file__).resolve()), str(scene), "--modes", mode]
        argv += ["--child-out", str(out)] + (["--crop", str(crop)] if crop else [])
        res = run_measured(argv, timeout_s, env, oom_victim=True)
        if res["rc"] != 0 or not out.exists():
            return PeerRun(mode, [], res["wall_s"], res["peak_mb"], crop or 0, res["tail"])
        got = json.loads(out.read_text())
    return PeerRun(mode, got["rows"], res["wall_s"] - got["diag_s"], res["peak_mb"], got["size"])


# ---- in the child process -------------------------------------------------------------------


@dataclass
class PeerImage:
    """One exposure after phrosty's per-image steps (sky subtraction, PSF), with its header."""

    path: Path
    header: Any = None
    data: Any = None
    var: Any = None
    detmask: Any = None
    skyrms: float = 0.0
    psf: Any = None
    x: float = 0.0  # the object, 0-based pixels
    y: float = 0.0
    error: str = ""


def prepare(row: Any, ra: float, dec: float, mode: str, crop: int | None) -> PeerImage:
    import numpy as np

    from orchestrator.dia.io import FitsImage

    out = PeerImage(row.path)
    try:
        with FitsImage(row.path) as img:
            ny, nx = img.shape
            n = min(crop or max(ny, nx), ny, nx)
            r0, c0 = (ny - n) // 2, (nx - n) // 2  # centred crop
            cut = img.read(slice(r0, r0 + n), slice(c0, c0 + n))
        data = np.nan_to_num(cut.data)
        x, y = (float(v) for v in cut.wcs.all_world2pix([[ra, dec]], 0)[0])
        sub, detmask, skyrms, objects, seg = sky_subtract(data)
        dx, dy = x - np.floor(x + 0.5), y - np.floor(y + 0.5)  # snappl get_stamp(x, y)
        if mode == "files":
            if row.psf_path is None:
                raise ValueError(f"{row.source}: no psf column")
            psf = psf_from_file(row.psf_path, dx, dy)
        else:
            psf = psf_from_stars(sub, cut.mask, objects, x, y, dx, dy)
        header = cut.wcs.to_header(relax=True)  # what align_and_pre_convolve builds
        header.insert(0, ("NAXIS", 2))
        header.insert("NAXIS", ("NAXIS1", n), after=True)
        header.insert("NAXIS1", ("NAXIS2", n), after=True)
        var = cut.variance if cut.variance is not None else np.full_like(data, skyrms**2)
        out.header, out.data, out.var, out.skyrms, out.psf = header, sub, var, skyrms, psf
        out.detmask = fixed_fit_mask(detmask, seg, cut.mask, x, y)
        out.x, out.y = x, y
    except Exception as exc:  # a bad image fails its own rows, as phrosty's catchfailures
        out.error = f"{type(exc).__name__}: {exc}"
    return out


def forced_photometry(diff: Any, var: Any, psf: Any, x: float, y: float) -> tuple[float, ...]:
    """snappl's psf_phot on a STAMP_PX stamp, the PSF's centre on the nearest pixel (fix 2)."""
    import numpy as np
    from astropy.table import Table
    from photutils.aperture import CircularAperture, aperture_photometry
    from photutils.background import LocalBackground, MMMBackground
    from photutils.psf import ImagePSF, PSFPhotometry

    ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    r0, c0 = iy - STAMP_PX // 2, ix - STAMP_PX // 2
    if r0 < 0 or c0 < 0 or r0 + STAMP_PX > diff.shape[0] or c0 + STAMP_PX > diff.shape[1]:
        raise ValueError("the photometry stamp leaves the image")
    stamp = diff[r0 : r0 + STAMP_PX, c0 : c0 + STAMP_PX]
    noise = np.sqrt(np.clip(var[r0 : r0 + STAMP_PX, c0 : c0 + STAMP_PX], 1e-12, None))
    px, py = float(ix - c0), float(iy - r0)
    ap = aperture_photometry(stamp, CircularAperture([(x - c0, y - r0)], r=AP_R_PX))
    model = ImagePSF(psf, x_0=px, y_0=py)
    model.x_0.fixed = model.y_0.fixed = True
    bkg = LocalBackground(*BKG_ANNULUS_PX, bkg_estimator=MMMBackground())
    phot = PSFPhotometry(model, FIT_SHAPE, local_bkg_estimator=bkg)
    init = Table({"x": [px], "y": [py], "flux": [float(ap["aperture_sum"][0])]})
    res = phot(stamp, error=noise, init_params=init)
    return float(res["flux_fit"][0]), float(res["flux_err"][0]), float(res["reduced_chi2"][0])


def subtract_pair(sci: PeerImage, tmpl: PeerImage, threads: int) -> tuple[dict[str, Any], float]:
    """One pair through SpaceSFFT_Flow as phrosty drives it; the row and the diagnostic time."""
    import contextlib
    import io

    import numpy as np
    from scipy.signal import fftconvolve
    from sfft.SpaceSFFTFlow import SpaceSFFT_Flow

    with contextlib.redirect_stdout(io.StringIO()):  # sfft prints banners and progress
        flow = SpaceSFFT_Flow(
            sci.header, tmpl.header, sci.skyrms, tmpl.skyrms, sci.data, tmpl.data,
            sci.var, tmpl.var, sci.detmask, tmpl.detmask, sci.psf, tmpl.psf,
            KerPolyOrder=KER_POLY_ORDER, GKerHW=KER_HW, BACKEND_4SUBTRACT="Numpy",
            NUM_CPU_THREADS_4SUBTRACT=threads,
        )  # fmt: skip
        flow.resample_image_mask_psf()
        flow.cross_convolve()
        flow.sfft_subtract()
        flow.find_decorrelation()
        var = flow.create_variance_image()
        diff = flow.apply_decorrelation(flow.PixA_DIFF)
        psf = flow.apply_decorrelation(flow.PSF_Ctarget)
    flux, err, chi2 = forced_photometry(diff, var, psf, sci.x, sci.y)
    # diagnostic (not phrosty's): mean D^2 / V over the fit-mask pixels, V the variance of the
    # cross-convolved difference (the flow's arrays are (x, y): so is this). Per pixel, not per
    # degree of freedom: on these scenes the mask holds fewer pixels than the ~2,170 unknowns
    # (GSS also fits the zeroed pixels around the mask, which pin the kernel to 0 there)
    t0 = time.perf_counter()
    fit = (flow.PixA_target_DMASK != 0) & (flow.PixA_resamp_object_DMASK >= 0.1) & ~flow.BlankMask
    p_s, p_t = flow.PSF_target, flow.PSF_resamp_object / flow.PSF_resamp_object.sum()
    v = fftconvolve(flow.PixA_targetVar, p_t**2, mode="same")
    v += fftconvolve(flow.PixA_resamp_objectVar, p_s**2, mode="same")
    n_fit = int(fit.sum())
    row = {"flux": flux, "err": err, "chi2": chi2, "n_fit": n_fit}
    row["fit_chi2"] = float(np.sum(flow.PixA_DIFF[fit] ** 2 / v[fit])) / max(1, n_fit)
    row["ksum"] = float(np.sum(flow.MATCH_KERNEL))
    row["n_unknowns"] = int(np.size(flow.Solution))
    return row, time.perf_counter() - t0


def child(scene: Path, mode: str, crop: int | None, out: Path) -> None:
    """Every science x template pair (science-major, as ``photometry run``); rows to ``out``."""
    from orchestrator.dia.io import read_list
    from orchestrator.dia.pipeline.truth import read_truth

    obj = json.loads((scene / "object.json").read_text())
    ra, dec, band = float(obj["ra"]) % 360.0, float(obj["dec"]), obj["band"]
    sciences = read_list(scene / "science.txt", band)
    templates = read_list(scene / "templates.txt", band)
    truth = read_truth(scene / "truth.csv") if (scene / "truth.csv").exists() else None
    threads = int(os.environ.get("NUMBA_NUM_THREADS", "1"))
    images = {r.path: prepare(r, ra, dec, mode, crop) for r in [*sciences, *templates]}
    rows, diag_s, size = [], 0.0, 0
    for s in sciences:
        match = truth.match(s.path) if truth else None
        for t in templates:
            sci, tmpl = images[s.path], images[t.path]
            row: dict[str, Any] = {"success": False, "flux": float("nan"), "err": float("nan")}
            row |= {"chi2": float("nan"), "fit_chi2": float("nan"), "ksum": float("nan")}
            row |= {"true": match.true_flux if match else float("nan"), "error": ""}
            row |= {"science_path": str(s.path), "template_path": str(t.path)}
            t0, d = time.perf_counter(), 0.0
            if sci.error or tmpl.error:
                row["error"] = sci.error or tmpl.error
            else:
                try:
                    got, d = subtract_pair(sci, tmpl, threads)
                    row |= got | {"success": True}
                    diag_s += d
                    size = sci.data.shape[0]
                except Exception as exc:
                    row["error"] = f"{type(exc).__name__}: {exc}"
            row["pair_s"] = time.perf_counter() - t0 - d
            rows.append(row)
    out.write_text(json.dumps({"rows": rows, "diag_s": diag_s, "size": size}))


def mask_note(rows: list[dict[str, Any]]) -> str:
    """How many pixels the peer's fit mask held, against its unknowns (median over pairs)."""
    import numpy as np

    ok = [r for r in rows if r["success"]]
    if not ok:
        return "no successful pair"
    n_fit = np.median([r["n_fit"] for r in ok])
    return f"fit mask: median {n_fit:.0f} px for {ok[0]['n_unknowns']} unknowns"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("scene", type=Path, help="a folder written by tests/dia/roman_scenes.py")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--crop", type=int, default=None, help="centred N x N crop of every image")
    ap.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_out is not None:
        child(args.scene, args.modes[0], args.crop, args.child_out)
        return
    from benchmarks.roman_quality import HEADER, figures, line

    print(HEADER)
    for mode in args.modes:
        run = run_peer(args.scene, mode, args.crop)
        if run.error:
            print(f"sfft {mode}: failed\n{run.error}")
            continue
        print(line("-", f"sfft {mode}", figures(run.rows), run.wall_s, run.peak_mb))
        print(f"  {mask_note(run.rows)}; {run.size}^2 images")


if __name__ == "__main__":
    main()
