"""GPU backend (CuPy). Same signatures as :mod:`orchestrator.dia.cpu`.

CuPy is imported inside functions only, so importing this module never needs CUDA. Host arrays
go in and come out; the image-sized work runs on the device.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from orchestrator.dia import cpu
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
assemble_kk = cpu.assemble_kk  # small (N^2) host work; the moments come from the device


def xcorr_lags(images: list[np.ndarray], ref: np.ndarray, max_lag: int) -> np.ndarray:
    """See :func:`orchestrator.dia.cpu.xcorr_lags`."""
    cp = _cupy()
    lag = int(max_lag)
    shape = fft_shape(ref.shape, lag)
    f_ref = cp.fft.rfft2(cp.asarray(ref), s=shape)
    rows = cp.asarray(np.arange(-lag, lag + 1) % shape[0])
    cols = cp.asarray(np.arange(-lag, lag + 1) % shape[1])
    out = np.empty((len(images), 2 * lag + 1, 2 * lag + 1))
    for m, image in enumerate(images):
        spec = cp.conj(cp.fft.rfft2(cp.asarray(image), s=shape)) * f_ref
        corr = cp.fft.irfft2(spec, s=shape)
        out[m] = cp.asnumpy(corr[rows[:, None], cols[None, :]])
    return out


def convolve(image: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """See :func:`orchestrator.dia.cpu.convolve`."""
    return np.stack(
        [convolve_sum(image, kernels[n : n + 1], [np.ones(1)]) for n in range(len(kernels))]
    )


def convolve_sum(image: np.ndarray, kernels: np.ndarray, weights: Any) -> np.ndarray:
    """See :func:`orchestrator.dia.cpu.convolve_sum`."""
    cp = _cupy()
    half = kernels.shape[-1] // 2
    shape = fft_shape(image.shape, 2 * half)
    f_img = cp.fft.rfft2(cp.asarray(image), s=shape)
    out = cp.zeros(image.shape)
    for kern, weight in zip(kernels, weights, strict=True):
        full = cp.fft.irfft2(cp.fft.rfft2(cp.asarray(kern), s=shape) * f_img, s=shape)
        out += cp.asarray(weight) * full[half : half + image.shape[0], half : half + image.shape[1]]
    return cp.asnumpy(out)


class EOperator:
    """See :class:`orchestrator.dia.cpu.EOperator`; patches are gathered once on the device."""

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
        cp = _cupy()
        w = int(half_width)
        r = np.arange(-w, w + 1)
        dy, dx = (a.ravel() for a in np.meshgrid(r, r, indexing="ij"))
        t0 = cp.asarray(t0p)
        rr = cp.asarray(rows[:, None] - dy[None, :] + pad)
        cc = cp.asarray(cols[:, None] - dx[None, :] + pad)
        self.patches = t0[rr, cc]  # (nE, nk)
        self.wgt = cp.asarray(wgt)
        self.pvals = cp.asarray(pvals)  # (nt, nE)

    def apply(self, kern: np.ndarray) -> np.ndarray:
        cp = _cupy()
        k = cp.asarray(kern)  # (nk, nt)
        model = cp.sum((self.patches @ k) * self.pvals.T, axis=1)  # (nE,)
        u = self.wgt * model
        out = self.patches.T @ (u[:, None] * self.pvals.T)  # (nk, nt)
        return cp.asnumpy(out)
