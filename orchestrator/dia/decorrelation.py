"""Decorrelation of the difference image (Reiss & Lupton 2016; Zackay et al. 2016, ZOGY).

After ``D = S (x) A_S - K (x) T (x) A_T`` (``A_S = P_T`` and ``A_T = P_S`` when the images were
cross-convolved, delta functions otherwise) the noise of D has the power spectrum
``sigma_S^2 |A_S|^2 + sigma_T^2 |A_T|^2 |K|^2``. The filter
``F = sqrt(P(0)) / sqrt(sigma_S^2 |A_S|^2 + sigma_T^2 |A_T|^2 |K|^2)`` (``F(0) = 1``: fluxes are
unchanged) whitens it. It is built on a stamp grid; the caller applies it to the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft


def embed(stamp: np.ndarray, size: int) -> np.ndarray:
    """An odd stamp on a ``size``-square grid with its centre at index (0, 0) (the FFT origin)."""
    out = np.zeros((size, size))
    r = (np.arange(stamp.shape[0]) - stamp.shape[0] // 2) % size
    c = (np.arange(stamp.shape[1]) - stamp.shape[1] // 2) % size
    out[np.ix_(r, c)] = stamp
    return out


def crop(grid: np.ndarray, half: int) -> np.ndarray:
    """Inverse of :func:`embed`: the ``(2 half + 1)``-square stamp around the origin."""
    idx = np.arange(-half, half + 1) % grid.shape[0]
    return grid[np.ix_(idx, idx)]


@dataclass(frozen=True)
class DecorrelationKernels:
    """Stamps (odd, centred) that the caller convolves with full images."""

    phi: np.ndarray  # the filter, applied to D
    science_noise: np.ndarray  # A_S (x) phi: squared, it carries the science variance
    template_noise: np.ndarray  # A_T (x) K (x) phi: squared, it carries the template variance
    psf: np.ndarray | None  # P_S (x) A_S (x) phi: a point source in the decorrelated image


def kernels(
    *,
    science_side: np.ndarray | None,
    template_side: np.ndarray | None,
    kernel: np.ndarray,
    science_psf: np.ndarray | None,
    var_science: float,
    var_template: float,
    half: int,
) -> DecorrelationKernels:
    """Decorrelation filter and the derived stamps, each ``(2 half + 1)`` square.

    ``science_side``/``template_side`` are A_S/A_T (None for a delta function); the variances are
    the background (white-noise) levels of the input images.
    """
    size = sfft.next_fast_len(4 * half + 1)
    one = np.ones((size, size // 2 + 1), dtype=complex)

    def ft(stamp: np.ndarray | None) -> np.ndarray:
        return one if stamp is None else sfft.rfft2(embed(stamp, size))

    f_as, f_at, f_k = ft(science_side), ft(template_side), ft(kernel)
    power = var_science * np.abs(f_as) ** 2 + var_template * np.abs(f_at * f_k) ** 2
    floor = 1e-12 * float(power.max())
    f_phi = np.sqrt(power[0, 0] / np.maximum(power, floor))

    def back(spec: np.ndarray) -> np.ndarray:
        return crop(sfft.irfft2(spec, s=(size, size)), half)

    psf = None if science_psf is None else back(f_phi * f_as * ft(science_psf))
    return DecorrelationKernels(
        phi=back(f_phi.astype(complex)),
        science_noise=back(f_phi * f_as),
        template_noise=back(f_phi * f_at * f_k),
        psf=psf,
    )
