"""Speed benchmark of the DIA core: one CPU subtraction (with decorrelation) per image size.

Prints figures, asserts nothing. Each size runs in a fresh subprocess so that its peak memory
(VmHWM from /proc/self/status: numpy and numba buffers included, unlike tracemalloc) is its own.
The first, untimed warm-up call on a small image loads or compiles the numba kernels.

    .venv/bin/python benchmarks/dia_speed.py [--sizes 1024 2048 4088] [--half-width 9]
        [--kernel-order 2] [--repeat 1]

Target (issue): 4088^2 under 15 s and 6 GB on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def synthetic(n: int, seed: int = 0):
    """A star field pair with Roman-like undersampled PSFs, 20 stars per 100x100 pixels."""
    import numpy as np
    import scipy.fft as sfft

    sys.path.insert(0, str(REPO))
    from tests.dia.scenes import gaussian_psf

    rng = np.random.default_rng(seed)
    n_stars = max(10, n * n // 500)
    half = 7
    psf_s, psf_t = gaussian_psf(1.2, half), gaussian_psf(0.9, half)
    points = np.zeros((n, n))
    ys, xs = rng.integers(0, n, n_stars), rng.integers(0, n, n_stars)
    np.add.at(points, (ys, xs), np.exp(rng.uniform(np.log(300), np.log(3e4), n_stars)))

    def conv(img, psf):
        shape = (sfft.next_fast_len(n + 2 * half), sfft.next_fast_len(n + 2 * half))
        full = sfft.irfft2(sfft.rfft2(img, s=shape) * sfft.rfft2(psf, s=shape), s=shape)
        return full[half : half + n, half : half + n]

    tmpl = conv(points, psf_t) + 20.0
    sci = conv(points, psf_s) + 80.0
    var_t, var_s = np.maximum(tmpl, 1.0), np.maximum(sci, 1.0)
    tmpl = tmpl + rng.normal(size=(n, n)) * np.sqrt(var_t)
    sci = sci + rng.normal(size=(n, n)) * np.sqrt(var_s)
    return sci, tmpl - 20.0, var_s, var_t, psf_s, psf_t


def child(n: int, half_width: int, order: int, repeat: int) -> None:
    import numpy as np

    sys.path.insert(0, str(REPO))
    from orchestrator import dia

    sci, tmpl, vs, vt, ps, pt = synthetic(n)
    small = synthetic(160, seed=1)
    t0 = time.perf_counter()
    dia.subtract(
        *small[:2],
        science_var=small[2],
        template_var=small[3],
        science_psf=small[4],
        template_psf=small[5],
        kernel_half_width=half_width,
        kernel_poly_order=order,
        backend="cpu",
    ).decorrelate()
    warm_s = time.perf_counter() - t0
    times, dec_times = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        sub = dia.subtract(
            sci,
            tmpl,
            science_var=vs,
            template_var=vt,
            science_psf=ps,
            template_psf=pt,
            kernel_half_width=half_width,
            kernel_poly_order=order,
            backend="cpu",
        )
        t1 = time.perf_counter()
        dec = sub.decorrelate()
        t2 = time.perf_counter()
        times.append(t1 - t0)
        dec_times.append(t2 - t1)
    z = dec.image / np.sqrt(dec.variance)
    z = z[np.isfinite(z)]
    print(
        json.dumps(
            {
                "n": n,
                "subtract_s": min(times),
                "decorrelate_s": min(dec_times),
                "total_s": min(times) + min(dec_times),
                "warmup_s": warm_s,
                "vm_hwm_mb": vm_hwm_mb(),
                "cg_iterations": sub.stats.cg_iterations,
                "n_corrected": sub.stats.n_corrected_pixels,
                "n_unknowns": sub.stats.n_unknowns,
                "kernel_sum": sub.kernel_sum,
                "z_mean": float(z.mean()),
                "z_std": float(z.std()),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4088])
    ap.add_argument("--half-width", type=int, default=9)
    ap.add_argument("--kernel-order", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.half_width, args.kernel_order, args.repeat)
        return
    print(
        f"cpus={os.cpu_count()} numba_threads={os.environ.get('NUMBA_NUM_THREADS', 'default')} "
        f"w={args.half_width} DK={args.kernel_order}"
    )
    print(
        f"{'size':>6} {'subtract_s':>10} {'decorr_s':>8} {'total_s':>8} {'peak_MB':>8} "
        f"{'cg_it':>5} {'n_corr':>8} {'k_sum':>8} {'z_std':>6}"
    )
    for n in args.sizes:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(n),
                "--half-width",
                str(args.half_width),
                "--kernel-order",
                str(args.kernel_order),
                "--repeat",
                str(args.repeat),
            ],
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        if out.returncode != 0:
            print(f"{n:>6} failed (rc {out.returncode}): {out.stderr.strip()[-500:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{n:>6} {r['subtract_s']:>10.2f} {r['decorrelate_s']:>8.2f} {r['total_s']:>8.2f} "
            f"{r['vm_hwm_mb']:>8.0f} {r['cg_iterations']:>5} {r['n_corrected']:>8} "
            f"{r['kernel_sum']:>8.5f} {r['z_std']:>6.3f}"
        )


if __name__ == "__main__":
    main()
