"""CPU backend: scipy.fft for the image-sized correlations, Numba for the pixel loops.

Every public function here has a twin of the same signature in :mod:`orchestrator.dia.gpu`.
Kernels are compiled with ``cache=True`` (the first call in a fresh environment compiles, later
processes load the cache) and ``fastmath=False`` (the fit is compared to references at 1e-10).
"""

from __future__ import annotations

import os

import numba
import numpy as np
import scipy.fft as sfft

NAME = "cpu"


def _workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def fft_shape(shape: tuple[int, int], margin: int) -> tuple[int, int]:
    """Padded FFT shape: at least ``shape + margin`` per axis (no wrap-around), fast sizes."""
    return (
        sfft.next_fast_len(shape[0] + margin, real=True),
        sfft.next_fast_len(shape[1] + margin, real=True),
    )


def xcorr_lags(images: list[np.ndarray], ref: np.ndarray, max_lag: int) -> np.ndarray:
    """``out[m, L + dy, L + dx] = sum_y images[m][y] * ref[y + d]`` for ``|dy|, |dx| <= L``.

    Linear (not circular) correlation: the FFTs are zero-padded by ``max_lag``.
    """
    lag = int(max_lag)
    shape = fft_shape(ref.shape, lag)
    workers = _workers()
    f_ref = sfft.rfft2(ref, s=shape, workers=workers)
    rows = np.arange(-lag, lag + 1) % shape[0]
    cols = np.arange(-lag, lag + 1) % shape[1]
    out = np.empty((len(images), 2 * lag + 1, 2 * lag + 1))
    for m, image in enumerate(images):
        spec = sfft.rfft2(image, s=shape, workers=workers)
        np.conjugate(spec, out=spec)
        spec *= f_ref
        corr = sfft.irfft2(spec, s=shape, workers=workers)
        out[m] = corr[np.ix_(rows, cols)]
    return out


def convolve(image: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Zero-padded ('same') convolutions of one image with each of ``kernels`` (n, h, h), h odd."""
    half = kernels.shape[-1] // 2
    shape = fft_shape(image.shape, 2 * half)
    workers = _workers()
    f_img = sfft.rfft2(image, s=shape, workers=workers)
    out = np.empty((len(kernels), *image.shape))
    for n, kern in enumerate(kernels):
        spec = sfft.rfft2(kern, s=shape, workers=workers)
        spec *= f_img
        full = sfft.irfft2(spec, s=shape, workers=workers)
        out[n] = full[half : half + image.shape[0], half : half + image.shape[1]]
    return out


def convolve_sum(image: np.ndarray, kernels: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
    """``sum_n weights[n] * (image conv kernels[n])`` without holding all terms at once."""
    half = kernels.shape[-1] // 2
    shape = fft_shape(image.shape, 2 * half)
    workers = _workers()
    f_img = sfft.rfft2(image, s=shape, workers=workers)
    out = np.zeros(image.shape)
    for kern, weight in zip(kernels, weights, strict=True):
        spec = sfft.rfft2(kern, s=shape, workers=workers)
        spec *= f_img
        full = sfft.irfft2(spec, s=shape, workers=workers)
        out += weight * full[half : half + image.shape[0], half : half + image.shape[1]]
    return out


@numba.njit(parallel=True, cache=True, fastmath=False)
def _assemble_kk(moments, mom_index, kexps, alpha_y, alpha_x, half_width, out):  # pragma: no cover
    """Kernel-kernel block of the plain normal matrix over all pixels (see fit._normal_all)."""
    w = half_width
    side = 2 * w + 1
    nk = side * side
    nt = kexps.shape[0]
    # binomial coefficients up to order 8 (DK <= 4)
    binom = np.zeros((9, 9))
    for n in range(9):
        binom[n, 0] = 1.0
        for r in range(1, n + 1):
            binom[n, r] = binom[n - 1, r - 1] + (binom[n - 1, r] if r <= n - 1 else 0.0)
    for k in numba.prange(nk):
        ky = k // side - w
        kx = k % side - w
        for lk in range(k, nk):
            ly = lk // side - w
            lx = lk % side - w
            dy = ly - ky + 2 * w
            dx = lx - kx + 2 * w
            sx = alpha_x * lx
            sy = alpha_y * ly
            for t in range(nt):
                for s in range(nt):
                    i = kexps[t, 0] + kexps[s, 0]
                    j = kexps[t, 1] + kexps[s, 1]
                    acc = 0.0
                    for a in range(i + 1):
                        cx = binom[i, a] * sx ** (i - a)
                        for b in range(j + 1):
                            cy = binom[j, b] * sy ** (j - b)
                            acc += cx * cy * moments[mom_index[a, b], dy, dx]
                    out[k * nt + t, lk * nt + s] = acc
                    out[lk * nt + s, k * nt + t] = acc


@numba.njit(parallel=True, cache=True, fastmath=False)
def _e_matvec(
    t0p, pad, rows, cols, wgt, pvals, kern, half_width, n_chunks, acc
):  # pragma: no cover
    """``acc[c] = sum_{x in chunk c} wgt a (a . kern)``, ``a(x)[k, t] = p_t(x) T0(x - k)``."""
    w = half_width
    side = 2 * w + 1
    nk = side * side
    nt = pvals.shape[0]
    n = rows.shape[0]
    step = (n + n_chunks - 1) // n_chunks
    for c in numba.prange(n_chunks):
        kx_local = np.empty(nk)
        for e in range(c * step, min(n, (c + 1) * step)):
            r = rows[e] + pad
            q = cols[e] + pad
            model = 0.0
            for k in range(nk):
                coef = 0.0
                for t in range(nt):
                    coef += pvals[t, e] * kern[k, t]
                kx_local[k] = coef
                model += coef * t0p[r - (k // side - w), q - (k % side - w)]
            u = wgt[e] * model
            if u == 0.0:
                continue
            for k in range(nk):
                tv = u * t0p[r - (k // side - w), q - (k % side - w)]
                for t in range(nt):
                    acc[c, k, t] += tv * pvals[t, e]


def assemble_kk(
    moments: np.ndarray,
    mom_index: np.ndarray,
    kexps: np.ndarray,
    alpha_y: float,
    alpha_x: float,
    half_width: int,
) -> np.ndarray:
    """Plain kernel-kernel normal block from lag moments (host arrays in, host array out)."""
    nk = (2 * half_width + 1) ** 2
    nt = kexps.shape[0]
    out = np.empty((nk * nt, nk * nt))
    _assemble_kk(moments, mom_index, kexps, float(alpha_y), float(alpha_x), int(half_width), out)
    return out


class EOperator:
    """The correction ``N_E v = sum_{x in E} (1 - Omega(x)) a(x) a(x)^T v`` over listed pixels."""

    def __init__(
        self,
        t0p: np.ndarray,
        pad: int,
        rows: np.ndarray,
        cols: np.ndarray,
        wgt: np.ndarray,
        pvals: np.ndarray,
        half_width: int,
    ) -> None:
        self.t0p = np.ascontiguousarray(t0p, dtype=np.float64)
        self.pad = int(pad)
        self.rows = np.ascontiguousarray(rows, dtype=np.int64)
        self.cols = np.ascontiguousarray(cols, dtype=np.int64)
        self.wgt = np.ascontiguousarray(wgt, dtype=np.float64)
        self.pvals = np.ascontiguousarray(pvals, dtype=np.float64)
        self.half_width = int(half_width)
        self.n_chunks = max(1, min(4 * numba.get_num_threads(), len(self.rows)))

    def apply(self, kern: np.ndarray) -> np.ndarray:
        """``(nk, nt)`` plain kernel coefficients -> ``(nk, nt)`` correction."""
        nk, nt = kern.shape
        acc = np.zeros((self.n_chunks, nk, nt))
        if len(self.rows):
            _e_matvec(
                self.t0p,
                self.pad,
                self.rows,
                self.cols,
                self.wgt,
                self.pvals,
                np.ascontiguousarray(kern),
                self.half_width,
                self.n_chunks,
                acc,
            )
        return acc.sum(axis=0)
