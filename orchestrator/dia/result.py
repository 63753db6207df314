"""What :func:`orchestrator.dia.subtract` returns: the difference image and its variance, the
kernel anywhere, the fit's statistics, and decorrelation (whole image or a box)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import maximum_filter

from orchestrator.dia import basis, decorrelation
from orchestrator.dia.backend import get_backend


@dataclass(frozen=True)
class FitStats:
    """How the kernel fit went."""

    n_fit_pixels: int  # pixels with non-zero weight
    n_corrected_pixels: int  # design rows formed one by one (frame corners, pixels with Omega < 1)
    solve_relative_residual: float  # |N c - b| / |b| of the Cholesky solve
    chi2_dof: float  # sum(D^2 / V) / (n - n_unknowns) over the fit pixels
    n_unknowns: int
    elapsed_s: float
    timings_s: dict[str, float] = field(default_factory=dict)  # by stage, for benchmarks
    solve_iterations: int = 0  # conjugate-gradient steps (0: direct Cholesky, see dia.fit)
    n_clipped_pixels: int = 0  # left out after a first fit as outliers (subtract's clip_sigma)


@dataclass(frozen=True)
class Decorrelated:
    """The decorrelated difference image, its per-pixel variance and its PSF at one position.

    ``image`` and ``variance`` cover the whole difference image, or with ``half`` given to
    :meth:`Subtraction.decorrelate` the box of rows ``origin[0]`` + ... around ``(x, y)``
    (``x``, ``y`` stay in the difference image's coordinates)."""

    image: np.ndarray
    variance: np.ndarray
    psf: np.ndarray | None  # None when the science PSF was not given
    filter: np.ndarray
    x: float
    y: float
    origin: tuple[int, int] = (0, 0)  # (row, column) of image[0, 0] in the difference image


@dataclass
class Subtraction:
    """Result of :func:`subtract`. Invalid pixels (edges, bad-pixel footprints) are NaN."""

    difference: np.ndarray
    variance: np.ndarray
    coefficients: np.ndarray  # modified delta basis (SFFT), see orchestrator.dia.basis
    kernel_terms: np.ndarray  # (nt, 2w+1, 2w+1): K(x, y) = sum_t p_t(x, y) kernel_terms[t]
    background_terms: np.ndarray  # (nb,): B(x, y) = sum_b q_b(x, y) background_terms[b]
    layout: basis.Layout
    backend: str
    stats: FitStats
    cross_convolved: bool
    shape: tuple[int, int]
    _science_var: np.ndarray = field(repr=False)
    _template_var: np.ndarray = field(repr=False)
    _science_side: np.ndarray | None = field(repr=False)
    _template_side: np.ndarray | None = field(repr=False)
    _science_psf: np.ndarray | None = field(repr=False)
    _invalid: np.ndarray = field(repr=False)
    _margin: int = field(repr=False)
    _cache: dict[tuple[float, float, int | None], Decorrelated] = field(
        default_factory=dict, repr=False
    )

    def _poly(self, x: float, y: float) -> np.ndarray:
        return basis.poly_values(self.layout.kernel_exps, np.array([y]), np.array([x]), self.shape)[
            :, 0
        ]

    def kernel_at(self, x: float, y: float) -> np.ndarray:
        """The convolution kernel at ``(x, y)`` (x = column): ``D = S - K (x) T - B``."""
        return np.tensordot(self._poly(x, y), self.kernel_terms, axes=1)

    def kernel_sum_at(self, x: float, y: float) -> float:
        """The photometric ratio (kernel sum) at ``(x, y)``."""
        return float(self.kernel_at(x, y).sum())

    @property
    def kernel_sum(self) -> float:
        """The photometric ratio at the image centre (everywhere when it is constant)."""
        return self.kernel_sum_at((self.shape[1] - 1) / 2, (self.shape[0] - 1) / 2)

    def background_at(self, x: float, y: float) -> float:
        q = basis.poly_values(self.layout.background_exps, np.array([y]), np.array([x]), self.shape)
        return float(q[:, 0] @ self.background_terms)

    def decorrelate(
        self, x: float | None = None, y: float | None = None, half: int | None = None
    ) -> Decorrelated:
        """Decorrelate with the kernel at ``(x, y)`` (default: the centre); cached per position.

        The filter whitens the noise where the kernel is the one at ``(x, y)``: with ``half``
        only the ``2 half + 1`` box around that pixel is computed (clipped to the image), the
        same pixels as the whole image would give there, at a fraction of the cost on a
        whole 4088^2 frame (three image-sized convolutions otherwise).
        """
        x = (self.shape[1] - 1) / 2 if x is None else float(x)
        y = (self.shape[0] - 1) / 2 if y is None else float(y)
        key = (x, y, half)
        if key in self._cache:
            return self._cache[key]
        backend = get_backend(self.backend)
        kern = self.kernel_at(x, y)
        good_s = self._science_var[~self._invalid]
        good_t = self._template_var[~self._invalid]
        var_s = float(np.median(good_s)) if good_s.size else 1.0
        var_t = float(np.median(good_t)) if good_t.size else 1.0
        stamp_half = 2 * self._margin + 4
        dk = decorrelation.kernels(
            science_side=self._science_side,
            template_side=self._template_side,
            kernel=kern,
            science_psf=self._science_psf,
            var_science=var_s,
            var_template=var_t,
            half=stamp_half,
        )
        # the box, and around it the pixels its convolutions read (the filters' half width and
        # the invalid mask's growth); zero beyond the image as for the whole image
        if half is None:
            box = inner = (slice(0, self.shape[0]), slice(0, self.shape[1]))
        else:
            reach = max(half, 0)
            pad = max(dk.phi.shape[0], dk.science_noise.shape[0]) // 2 + self._margin
            cy, cx = math.floor(y + 0.5), math.floor(x + 0.5)
            box = _clip_box(cy, cx, reach + pad, self.shape)
            inner = _clip_box(cy, cx, reach, self.shape)
        d0 = np.where(self._invalid[box], 0.0, self.difference[box])
        image = backend.convolve(d0, dk.phi[None])[0]
        variance = backend.convolve(self._science_var[box], (dk.science_noise**2)[None])[0]
        variance += backend.convolve(self._template_var[box], (dk.template_noise**2)[None])[0]
        invalid = _dilate(self._invalid[box], self._margin)
        image[invalid] = np.nan
        variance[invalid] = np.nan
        rel = (
            slice(inner[0].start - box[0].start, inner[0].stop - box[0].start),
            slice(inner[1].start - box[1].start, inner[1].stop - box[1].start),
        )
        out = Decorrelated(
            np.ascontiguousarray(image[rel]),
            np.ascontiguousarray(variance[rel]),
            dk.psf,
            dk.phi,
            x,
            y,
            (inner[0].start, inner[1].start),
        )
        self._cache[key] = out
        return out


def _clip_box(cy: int, cx: int, half: int, shape: tuple[int, int]) -> tuple[slice, slice]:
    """The ``2 half + 1`` box around ``(cy, cx)``, clipped to ``shape``."""
    return (
        slice(max(0, cy - half), min(shape[0], cy + half + 1)),
        slice(max(0, cx - half), min(shape[1], cx + half + 1)),
    )


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0 or not mask.any():
        return mask.copy()
    return np.asarray(maximum_filter(mask, size=2 * radius + 1, mode="constant", cval=False))
