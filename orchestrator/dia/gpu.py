"""GPU backend (CuPy). Same signatures as :mod:`orchestrator.dia.cpu`.

CuPy is imported inside functions only, so importing this module never needs CUDA. Host arrays
go in and come out; the image-sized work runs on the device.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from orchestrator.dia import basis, cpu

# the host-side assembly is part of both backends' interface (ComputeBackend): re-exported
from orchestrator.dia.assemble import assemble_kk as assemble_kk
from orchestrator.dia.assemble import assemble_strip as assemble_strip
from orchestrator.dia.assemble import line_pair_moments as line_pair_moments
from orchestrator.dia.assemble import strip_sums as strip_sums
from orchestrator.dia.errors import DiaBackendError

NAME = "gpu"


def _cupy() -> Any:
    import cupy

    return cupy


def available() -> bool:
    """True when CuPy imports and at least one CUDA device answers."""
    try:
        cp = _cupy()
        return int(cp.cuda.runtime.getDeviceCount()) > 0
    except Exception:
        return False


def require() -> None:
    """Raise :class:`DiaBackendError` unless the GPU backend can run here."""
    try:
        cp = _cupy()
    except ImportError as exc:
        raise DiaBackendError(
            "backend='gpu' needs CuPy (pip install cupy-cuda12x) and a CUDA device; "
            "CuPy is not installed. Use backend='cpu' or 'auto'."
        ) from exc
    try:
        count = int(cp.cuda.runtime.getDeviceCount())
    except Exception as exc:
        raise DiaBackendError(f"backend='gpu': CuPy found no usable CUDA device ({exc})") from exc
    if count == 0:
        raise DiaBackendError("backend='gpu': CuPy is installed but no CUDA device is present")


fft_shape = cpu.fft_shape


def rfft(image: np.ndarray, fshape: tuple[int, int]) -> Any:
    """See :func:`orchestrator.dia.cpu.rfft`; the spectrum stays on the device."""
    cp = _cupy()
    return cp.fft.rfft2(cp.asarray(image), s=fshape)


def rfft_product(a: np.ndarray, b: np.ndarray | None, fshape: tuple[int, int]) -> Any:
    """See :func:`orchestrator.dia.cpu.rfft_product`; the spectrum stays on the device."""
    cp = _cupy()
    image = cp.asarray(a) if b is None else cp.asarray(a) * cp.asarray(b)
    return cp.fft.rfft2(image, s=fshape)


def _twiddles(n: int, offsets: tuple[int, int], count: int, sign: int) -> Any:
    return _cupy().asarray(cpu._twiddles(n, offsets, count, sign))


def lags(spec: Any, ref_spec: Any, max_lag: int) -> np.ndarray:
    """See :func:`orchestrator.dia.cpu.lags` (partial inverse DFT on the device)."""
    cp = _cupy()
    lag = int(max_lag)
    py, pxh = spec.shape
    px = 2 * (pxh - 1)
    prod = cp.conj(spec) * ref_spec
    weight = cp.full(pxh, 2.0)
    weight[0] = weight[-1] = 1.0
    rows = (_twiddles(py, (-lag, lag + 1), py, 1).T @ prod) * weight
    out = cp.real(rows @ _twiddles(px, (-lag, lag + 1), pxh, 1)) / (py * px)
    return np.asarray(cp.asnumpy(out))


def moment_spectra(
    image: np.ndarray, exps: np.ndarray, fshape: tuple[int, int]
) -> Iterator[tuple[int, Any]]:
    """See :func:`orchestrator.dia.cpu.moment_spectra` (device spectra)."""
    cp = _cupy()
    img = cp.asarray(image)
    for m, (i, j) in enumerate(exps):
        poly = cp.asarray(basis.poly_image(int(i), int(j), image.shape))
        yield m, cp.fft.rfft2(poly * img, s=fshape)


def kernel_spectrum(
    kernel: np.ndarray, fshape: tuple[int, int], dtype: type = np.complex128
) -> Any:
    """See :func:`orchestrator.dia.cpu.kernel_spectrum` (on the device)."""
    cp = _cupy()
    h0, h1 = kernel.shape[0] // 2, kernel.shape[1] // 2
    ey = _twiddles(fshape[0], (-h0, h0 + 1), fshape[0], -1)
    ex = _twiddles(fshape[1], (-h1, h1 + 1), fshape[1] // 2 + 1, -1)
    small = cp.asarray(kernel, dtype=cp.float64) @ ex.T
    return ey.astype(dtype, copy=False) @ small.astype(dtype, copy=False)


def convolve_spectra(
    specs: list[Any], kernels: Sequence[np.ndarray], fshape: tuple[int, int], shape: tuple[int, int]
) -> np.ndarray:
    """See :func:`orchestrator.dia.cpu.convolve_spectra`."""
    cp = _cupy()
    acc = cp.zeros_like(specs[0])
    for spec, kern in zip(specs, kernels, strict=True):
        acc += spec * kernel_spectrum(kern, fshape, spec.dtype.type)
    full = cp.fft.irfft2(acc, s=fshape)
    return np.asarray(cp.asnumpy(full[: shape[0], : shape[1]]), dtype=np.float64)


def convolve(image: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """See :func:`orchestrator.dia.cpu.convolve`."""
    half = kernels.shape[-1] // 2
    fshape = fft_shape(image.shape, half)
    spec = rfft(image, fshape)
    return np.stack([convolve_spectra([spec], k[None], fshape, image.shape) for k in kernels])
