"""CPU backend: scipy.fft for the image-sized work, BLAS for the lag sums, Numba for the loops.

Every public function here has a twin of the same signature in :mod:`orchestrator.dia.gpu`
(the small host-side kernels are shared). Kernels are compiled with ``cache=True`` (the first
call in a fresh environment compiles, later processes load the cache) and ``fastmath=False``
(the fit is compared to references at 1e-10).

Spectra are ``rfft2`` of images zero-padded to :func:`fft_shape`; the FFTs never compute more
than they must:

* a small kernel's spectrum on the image grid is a partial DFT (two small matrix products),
  not a full-size FFT of a mostly-zero array;
* a correlation needed only at lags within ``+-L`` is a partial inverse DFT of the product
  spectrum (one complex matrix product over the rows, one small one over the columns), about a
  fifth of an inverse FFT on a 4096^2 grid.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache

import numba
import numpy as np
import scipy.fft as sfft

from orchestrator.dia import threads

# the host-side assembly is part of both backends' interface (ComputeBackend): re-exported
from orchestrator.dia.assemble import assemble_kk as assemble_kk
from orchestrator.dia.assemble import assemble_strip as assemble_strip
from orchestrator.dia.assemble import line_pair_moments as line_pair_moments
from orchestrator.dia.assemble import strip_sums as strip_sums
from orchestrator.dia.basis import scale as basis_scale

NAME = "cpu"
# the host-side kernels that build the normal matrix from lag and strip sums, shared with the
# GPU backend (orchestrator.dia.assemble); part of this backend's interface
__all__ = [
    "NAME",
    "assemble_kk",
    "assemble_strip",
    "convolve",
    "convolve_spectra",
    "fft_shape",
    "kernel_spectrum",
    "lags",
    "line_pair_moments",
    "moment_spectra",
    "rfft",
    "rfft_product",
    "strip_sums",
]
LAG_BLOCK_ROWS = 256  # rows of a spectrum product formed at once in lags()


def _smooth_len(n: int) -> int:
    """The smallest even ``m >= n`` whose prime factors are 2, 3, 5 and 7 (pocketfft is fast
    there; scipy's ``next_fast_len(real=True)`` skips 7 and pads 4106 to 4320, not 4116)."""
    m = max(2, n + (n % 2))
    while True:
        r = m
        for p in (2, 3, 5, 7):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 2


def fft_shape(shape: tuple[int, int], margin: int) -> tuple[int, int]:
    """Padded FFT shape: at least ``shape + margin`` per axis (no wrap-around), fast sizes."""
    return _smooth_len(shape[0] + margin), _smooth_len(shape[1] + margin)


def rfft(image: np.ndarray, fshape: tuple[int, int]) -> np.ndarray:
    """The zero-padded ``rfft2`` of ``image`` on the grid ``fshape``."""
    return np.asarray(sfft.rfft2(image, s=fshape, workers=threads.workers()))


def rfft_product(a: np.ndarray, b: np.ndarray | None, fshape: tuple[int, int]) -> np.ndarray:
    """The zero-padded ``rfft2`` of ``a * b`` (of ``a`` when ``b`` is None) on the grid
    ``fshape``, the product formed in the padded buffer (no image-sized temporary, no copy)."""
    buf = np.zeros(fshape)
    part = buf[: a.shape[0], : a.shape[1]]
    if b is None:
        part[...] = a
    else:
        np.multiply(a, b, out=part)
    return np.asarray(sfft.rfft2(buf, workers=threads.workers(), overwrite_x=True))


@lru_cache(maxsize=16)
def _twiddles(n: int, offsets: tuple[int, int], count: int, sign: int) -> np.ndarray:
    """``exp(sign 2 pi i f k / n)`` for ``f < count`` and ``k`` in ``range(*offsets)``
    (``(count, n_k)``); the phase is reduced modulo ``n`` in integers to keep it exact."""
    f = np.arange(count, dtype=np.int64)[:, None]
    k = np.arange(*offsets, dtype=np.int64)[None, :]
    return np.asarray(np.exp(sign * 2j * np.pi * ((f * k) % n) / n))


def kernel_spectrum(
    kernel: np.ndarray, fshape: tuple[int, int], dtype: type = np.complex128
) -> np.ndarray:
    """``rfft2`` of an odd stamp centred on the origin (offset ``k`` at index ``k mod n``), in
    ``dtype`` (complex64 beside a single-precision spectrum)."""
    h0, h1 = kernel.shape[0] // 2, kernel.shape[1] // 2
    ey = _twiddles(fshape[0], (-h0, h0 + 1), fshape[0], -1)
    ex = _twiddles(fshape[1], (-h1, h1 + 1), fshape[1] // 2 + 1, -1)
    small = np.asarray(kernel, dtype=np.float64) @ ex.T
    return np.asarray(ey.astype(dtype, copy=False) @ small.astype(dtype, copy=False))


@numba.njit(cache=True, fastmath=False, nogil=True)
def _conj_mul(a, b, out):  # pragma: no cover
    """``out = conj(a) * b`` in one pass (no temporaries the size of a spectrum); without the
    GIL, so that :func:`lags`' threads run it side by side."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = np.conj(a[i, j]) * b[i, j]


def lags(spec: np.ndarray, ref_spec: np.ndarray, max_lag: int) -> np.ndarray:
    """``out[L + dy, L + dx] = sum_y image[y] ref[y + d]`` for ``|dy|, |dx| <= L`` from the two
    spectra (linear correlation when the padding is at least ``L``).

    A partial inverse DFT: over the rows, ``conj(spec) ref_spec`` times the ``2L + 1`` row
    twiddles, in blocks of :data:`LAG_BLOCK_ROWS` rows so that the product never exists at full
    size (it stays in cache, and a 4096^2 grid needs no 135 MB scratch array); then over the
    columns. The thin factor sits on the right of the BLAS product (3-4x faster than on the
    left for these shapes). The row blocks are dealt out to one thread per core, each with its
    own product and sum (the product without the GIL, the matrix product on a one-thread BLAS):
    0.068 -> 0.046 s per call at L = 18 on a 4032^2 grid on two cores, where one thread per
    call left the matrix products on one core. The threads' sums are added in a fixed order.
    """
    lag = int(max_lag)
    py = spec.shape[0]
    pxh = spec.shape[1]
    px = 2 * (pxh - 1)  # fft_shape sizes are even
    ey = _twiddles(py, (-lag, lag + 1), py, 1)  # (py, 2L+1), C order
    ex = _twiddles(px, (-lag, lag + 1), pxh, 1)  # (pxh, 2L+1)
    starts = list(range(0, py, LAG_BLOCK_ROWS))
    workers = min(threads.workers(), len(starts))

    def rows_sum(mine: list[int]) -> np.ndarray:
        cols = np.zeros((pxh, 2 * lag + 1), dtype=np.complex128)
        block = np.empty((min(LAG_BLOCK_ROWS, py), pxh), dtype=np.complex128)
        for r0 in mine:
            r1 = min(py, r0 + LAG_BLOCK_ROWS)
            prod = block[: r1 - r0]
            _conj_mul(spec[r0:r1], ref_spec[r0:r1], prod)
            cols += prod.T @ ey[r0:r1]
        return cols

    shares = [starts[k::workers] for k in range(workers)]
    if workers == 1:
        cols = rows_sum(starts)
    else:
        cols = np.zeros((pxh, 2 * lag + 1), dtype=np.complex128)
        for part in threads.pool(workers).map(rows_sum, shares):
            cols += part
    # Hermitian symmetry of the full spectrum: columns 1..px/2-1 stand for two.
    cols[1:-1] *= 2.0
    return np.asarray(np.real(cols.T @ ex) / (py * px))


def moment_spectra(
    image: np.ndarray, exps: np.ndarray, fshape: tuple[int, int]
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(m, rfft2(x~^i y~^j image))`` for every ``(i, j) = exps[m]``, ``(0, 0)`` first.

    A weight that depends on y only commutes with the FFT along x, so each power of x costs one
    FFT along x and each ``(i, j)`` one FFT along y: 5 + 15 half transforms instead of 15 full
    ones for 2 DK = 4.
    """
    n0, n1 = image.shape
    ay, by = basis_scale(n0)
    ax, bx = basis_scale(n1)
    xs = ax * np.arange(n1, dtype=np.float64) + bx
    ys = ay * np.arange(n0, dtype=np.float64) + by
    by_i: dict[int, list[tuple[int, int]]] = {}
    for m, (i, j) in enumerate(exps):
        by_i.setdefault(int(i), []).append((int(j), m))
    workers = threads.workers()
    # every product is formed in the zero-padded buffer its FFT then overwrites: on a 4088^2
    # frame each fresh 135 MB array costs page faults (and huge-page compaction) that took
    # a third of this function's time when the weights and the padding made copies
    # (one such buffer for every power of x: the FFT may scribble on it, so it is refilled)
    buf = np.empty((n0, fshape[1]))
    for i in sorted(by_i):
        if i:
            np.multiply(image, xs**i, out=buf[:, :n1])
        else:
            buf[:, :n1] = image
        buf[:, n1:] = 0.0
        along_x = sfft.rfft(buf, axis=1, workers=workers, overwrite_x=True)
        for j, m in sorted(by_i[i]):
            spec = np.empty((fshape[0], along_x.shape[1]), dtype=along_x.dtype)
            if j:
                np.multiply(along_x, (ys**j)[:, None], out=spec[:n0])
            else:
                spec[:n0] = along_x
            spec[n0:] = 0.0
            yield m, sfft.fft(spec, axis=0, workers=workers, overwrite_x=True)
            del spec
        del along_x
    del buf


def convolve_spectra(
    specs: list[np.ndarray],
    kernels: Sequence[np.ndarray],
    fshape: tuple[int, int],
    shape: tuple[int, int],
) -> np.ndarray:
    """``sum_n image_n conv kernels[n]`` ('same', zero outside) from the images' spectra
    (``kernels`` odd stamps, of different sizes if need be). Single-precision spectra (of
    float32 images) are convolved in single precision; the result is float64 either way."""
    acc: np.ndarray | None = None
    for spec, kern in zip(specs, kernels, strict=True):
        term = kernel_spectrum(kern, fshape, spec.dtype.type)
        term *= spec  # the kernel's spectrum is the scratch array: no further temporaries
        if acc is None:
            acc = term
        else:
            acc += term
        del term
    assert acc is not None
    # the two axes one by one: the complex pass in place, then the real output (irfft2 copies
    # its input first: one spectrum-sized array more at the subtraction's peak, 135 MB at 4088^2)
    workers = threads.workers()
    acc = sfft.ifft(acc, axis=0, workers=workers, overwrite_x=True)
    full = sfft.irfft(acc, n=fshape[1], axis=1, workers=workers, overwrite_x=True)
    del acc  # before the crop's copy
    return np.ascontiguousarray(full[: shape[0], : shape[1]], dtype=np.float64)


def convolve(image: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Zero-padded ('same') convolutions of one image with each of ``kernels`` (n, h, h), h odd
    (in single precision when ``image`` is float32; float64 out)."""
    half = kernels.shape[-1] // 2
    fshape = fft_shape(image.shape, half)
    spec = rfft(image, fshape)
    if len(kernels) == 1:  # no stacked copy of the one image
        return convolve_spectra([spec], [kernels[0]], fshape, image.shape)[None]
    return np.stack([convolve_spectra([spec], k[None], fshape, image.shape) for k in kernels])
