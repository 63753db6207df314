"""Difference-image analysis (DIA): image subtraction and forced photometry.

The numerical core of the Roman supernova photometry job kind. The daemon never imports this
package; it runs in the job's child processes (numba compilation, large arrays).

* :func:`subtract` fits ``S ~ K(x, y) (x) T + B(x, y)`` (pixel delta basis of half-width ``w``,
  kernel polynomial order ``DK``, background order ``DB``, optional constant photometric ratio)
  by exact least squares over the good pixels, without wrap-around, and returns a
  :class:`Subtraction` (difference image, its variance, the kernel anywhere, decorrelation).
* :func:`forced_photometry` measures a PSF flux at a known position.

Defaults follow Roman practice (phrosty): w = 9, DK = 2, DB = 0, constant ratio, cross-convolution
of the science with the template PSF and the template with the science PSF first.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Literal

import numpy as np
from scipy.ndimage import binary_dilation, maximum_filter

from orchestrator.dia import basis, decorrelation, fit
from orchestrator.dia.errors import DiaBackendError, DiaError, DiaFitError, DiaInputError
from orchestrator.dia.photometry import Photometry, forced_photometry

__all__ = [
    "Decorrelated",
    "DiaBackendError",
    "DiaError",
    "DiaFitError",
    "DiaInputError",
    "FitStats",
    "Photometry",
    "Subtraction",
    "forced_photometry",
    "get_backend",
    "subtract",
]

Backend = Literal["auto", "cpu", "gpu"]
CLIP_ROUNDS = 3  # at most this many refits after clipping outliers (subtract's clip_sigma)


def get_backend(name: str) -> ModuleType:
    """The backend module for ``name``; ``gpu`` without CuPy or a device raises (no fallback)."""
    from orchestrator.dia import cpu, gpu

    if name == "cpu":
        return cpu
    if name == "gpu":
        gpu.require()
        return gpu
    if name == "auto":
        return gpu if gpu.available() else cpu
    raise DiaInputError(f"backend must be 'auto', 'cpu' or 'gpu', got {name!r}")


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
    return maximum_filter(mask, size=2 * radius + 1, mode="constant", cval=False)


def _as_image(name: str, value: object, shape: tuple[int, int] | None) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 2:
        raise DiaInputError(f"{name} must be a 2-D array, got shape {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise DiaInputError(f"{name} must have the science image's shape {shape}, got {arr.shape}")
    return arr


def _as_psf(name: str, value: object) -> np.ndarray | None:
    if value is None:
        return None
    psf = np.asarray(value, dtype=np.float64)
    if psf.ndim != 2 or psf.shape[0] != psf.shape[1] or psf.shape[0] % 2 == 0:
        raise DiaInputError(f"{name} must be a square stamp of odd size, got shape {psf.shape}")
    total = float(psf.sum())
    if not np.isfinite(total) or total <= 0:
        raise DiaInputError(f"{name} must be finite with a positive sum, got sum {total}")
    return psf / total


def _robust_var(image: np.ndarray, good: np.ndarray) -> float:
    vals = image[good]
    if vals.size < 2:
        return 1.0
    mad = float(np.median(np.abs(vals - np.median(vals))))
    return max((1.4826 * mad) ** 2, 1e-300)


@dataclass
class Prepared:
    """Fit inputs after masking and cross-convolution (exposed for tests)."""

    science: np.ndarray  # S (x) A_S, zero on bad pixels
    template: np.ndarray  # T (x) A_T, zero on bad pixels
    omega: np.ndarray  # fit weights in [0, 1]
    invalid: np.ndarray  # where the difference image cannot be trusted
    science_var: np.ndarray  # input variance, zero-filled at bad pixels
    template_var: np.ndarray
    science_side: np.ndarray | None
    template_side: np.ndarray | None
    margin: int


def prepare(
    science: np.ndarray,
    template: np.ndarray,
    *,
    science_psf: np.ndarray | None,
    template_psf: np.ndarray | None,
    science_var: np.ndarray | None,
    template_var: np.ndarray | None,
    mask: np.ndarray | None,
    half_width: int,
    weights: str | None,
    cross_convolve: bool,
    backend: ModuleType,
    fit_exclude: np.ndarray | None = None,
) -> Prepared:
    """Mask, cross-convolve and build the fit weights (see :func:`subtract`)."""
    shape = science.shape
    bad = ~np.isfinite(science) | ~np.isfinite(template)
    if mask is not None:
        bad |= np.asarray(mask, dtype=bool)
    for var in (science_var, template_var):
        if var is not None:
            bad |= ~np.isfinite(var) | (var < 0)
    # zero the bad pixels in copies; with none (the pipeline inpaints and crops to the covered
    # box) the inputs are used as they are, read-only: four image-sized copies saved
    any_bad = bool(bad.any())

    def zeroed(image: np.ndarray) -> np.ndarray:
        return np.where(bad, 0.0, image) if any_bad else image

    s0, t0 = zeroed(science), zeroed(template)
    vs = np.full(shape, _robust_var(science, ~bad)) if science_var is None else science_var
    vt = np.full(shape, _robust_var(template, ~bad)) if template_var is None else template_var
    vs, vt = zeroed(vs), zeroed(vt)

    use_cc = cross_convolve and science_psf is not None and template_psf is not None
    side_s = template_psf if use_cc else None
    side_t = science_psf if use_cc else None
    h = max(side_s.shape[0] // 2, side_t.shape[0] // 2) if use_cc else 0  # type: ignore[union-attr]
    if use_cc:
        s1 = backend.convolve(s0, side_s[None])[0]  # type: ignore[index]
        t1 = backend.convolve(t0, side_t[None])[0]  # type: ignore[index]
        bad1 = _dilate(bad, h)
        s1[bad1] = 0.0
        t1[bad1] = 0.0
    else:
        s1, t1, bad1 = s0, t0, bad
    margin = half_width + h
    invalid = _dilate(bad1, half_width)
    invalid[:margin] = True
    invalid[-margin:] = True
    invalid[:, :margin] = True
    invalid[:, -margin:] = True
    omega = (~invalid).astype(np.float64)
    if fit_exclude is not None:
        omega[np.asarray(fit_exclude, dtype=bool)] = 0.0
    if weights == "ivar":
        if use_cc:
            var_fit = backend.convolve(vs, (side_s**2)[None])[0]  # type: ignore[operator]
            var_fit += backend.convolve(vt, (side_t**2)[None])[0]  # type: ignore[operator]
        else:
            var_fit = vs + vt
        fitvals = var_fit[~invalid]
        if fitvals.size:
            ref = float(np.median(fitvals))
            with np.errstate(divide="ignore", invalid="ignore"):
                omega *= np.where(var_fit > ref, ref / var_fit, 1.0)
    elif weights is not None:
        raise DiaInputError(f"weights must be 'ivar' or None, got {weights!r}")
    return Prepared(s1, t1, omega, invalid, vs, vt, side_s, side_t, margin)


def subtract(
    science: np.ndarray,
    template: np.ndarray,
    *,
    science_psf: np.ndarray | None = None,
    template_psf: np.ndarray | None = None,
    science_var: np.ndarray | None = None,
    template_var: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    kernel_half_width: int = 9,
    kernel_poly_order: int = 2,
    background_poly_order: int = 0,
    constant_ratio: bool = True,
    weights: Literal["ivar"] | None = None,
    cross_convolve: bool = True,
    backend: Backend = "auto",
    fit_exclude: np.ndarray | None = None,
    clip_sigma: float | None = None,
) -> Subtraction:
    """Subtract ``template`` from ``science`` (same pixel grid); see the module docstring.

    ``mask`` (True = bad) joins NaNs and non-finite variances as bad pixels of either image; the
    fit uses pixels whose whole kernel footprint is good, away from the edges. Without variance
    maps a constant variance is estimated from each image (median absolute deviation).
    ``weights='ivar'`` down-weights pixels whose variance exceeds the median (sources) by
    ``median / variance`` and keeps weight 1 elsewhere: a constant (sky) weight, which the
    FFT lag-moment sums can carry, plus exact per-pixel inverse-variance weights where sources
    raise the variance. A weight inside the sums (``sum_x W(x) T(x - k) T(x - l)``) is not a
    function of the lag ``l - k`` alone, so per-pixel weights everywhere would give up the FFT
    form; instead each down-weighted pixel is one rank-one update of the normal matrix (BLAS
    ``dsyrk``, about 0.04 s per 1,000 pixels at w = 9, DK = 2 on two cores). Cheap for sparse
    fields; in a crowded 4088^2 field with smooth variance maps it can add tens of seconds, and
    with noisy variance maps (half the pixels above the median) it is impractical.
    Cross-convolution needs both PSFs; when one is missing the images are fitted directly.
    ``fit_exclude`` (True = leave out) keeps pixels out of the fit only, e.g. around the target,
    so that a bright transient cannot pull the kernel; they are still subtracted.
    ``clip_sigma``: after the fit, pixels whose difference exceeds that many sigma (and their 8
    neighbours) are left out and the kernel refitted, up to :data:`CLIP_ROUNDS` times: the cores
    of stars that no kernel subtracts on undersampled, resampled images (20-25 sigma on Roman
    scenes) would otherwise pull it. Exact (see :func:`orchestrator.dia.fit.leave_out`), and
    cheap: the refit reuses the FFT sums. ``stats.n_clipped_pixels`` counts them; the fit's
    chi2 is over the pixels it kept.
    """
    started = time.perf_counter()
    be = get_backend(backend)
    s = _as_image("science", science, None)
    shape = (int(s.shape[0]), int(s.shape[1]))
    t = _as_image("template", template, shape)
    vs = None if science_var is None else _as_image("science_var", science_var, shape)
    vt = None if template_var is None else _as_image("template_var", template_var, shape)
    for name, arr in (("mask", mask), ("fit_exclude", fit_exclude)):
        if arr is not None and np.shape(arr) != shape:
            raise DiaInputError(
                f"{name} must have the science image's shape {shape}, got {np.shape(arr)}"
            )
    psf_s = _as_psf("science_psf", science_psf)
    psf_t = _as_psf("template_psf", template_psf)
    w, dk, db = int(kernel_half_width), int(kernel_poly_order), int(background_poly_order)
    if w < 0 or not 0 <= dk <= 4 or not 0 <= db <= 4:
        raise DiaInputError(
            "need kernel_half_width >= 0, 0 <= kernel_poly_order <= 4, "
            f"0 <= background_poly_order <= 4; "
            f"got {w}, {dk}, {db}"
        )
    layout = basis.Layout(w, dk, db, bool(constant_ratio))
    prep = prepare(
        s,
        t,
        science_psf=psf_s,
        template_psf=psf_t,
        science_var=vs,
        template_var=vt,
        mask=mask,
        half_width=w,
        weights=weights,
        cross_convolve=cross_convolve,
        backend=be,
        fit_exclude=fit_exclude,
    )
    n_fit = int(np.count_nonzero(prep.omega))
    if n_fit < 2 * layout.n_unknowns:
        raise DiaFitError(
            f"only {n_fit} good pixels for {layout.n_unknowns} unknowns: lower "
            "kernel_half_width or the "
            f"polynomial orders, or mask fewer pixels"
        )
    problem, solution = fit.fit_kernel(prep.science, prep.template, prep.omega, layout, be)
    difference, variance, kern_terms, bg_terms = _evaluate(prep, problem, solution, be)
    n_clipped = 0
    for _ in range(CLIP_ROUNDS if clip_sigma is not None else 0):
        clock = time.perf_counter()
        full = prep.omega == 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            out = full & (difference**2 > float(clip_sigma) ** 2 * variance)  # type: ignore[arg-type]
        if not out.any():
            break
        out = binary_dilation(out, structure=np.ones((3, 3), dtype=bool)) & full
        if np.count_nonzero(prep.omega) - np.count_nonzero(out) < 2 * layout.n_unknowns:
            break  # never clip the fit below what it needs
        rows, cols = np.nonzero(out)
        fit.leave_out(problem, prep.science, prep.template, rows, cols, prep.omega[rows, cols])
        prep.omega[rows, cols] = 0.0
        n_clipped += len(rows)
        solution = fit.solve(problem)
        problem.timings_s["clip"] = problem.timings_s.get("clip", 0.0) + (
            time.perf_counter() - clock
        )
        difference, variance, kern_terms, bg_terms = _evaluate(prep, problem, solution, be)
    problem.model_spectra.clear()
    n_fit = int(np.count_nonzero(prep.omega))
    difference[prep.invalid] = np.nan
    variance[prep.invalid] = np.nan

    fit_px = prep.omega > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = float(np.sum(difference[fit_px] ** 2 / variance[fit_px]))
    stats = FitStats(
        n_fit_pixels=n_fit,
        n_corrected_pixels=problem.n_e,
        solve_relative_residual=solution.relative_residual,
        chi2_dof=chi2 / max(1, n_fit - layout.n_unknowns),
        n_unknowns=layout.n_unknowns,
        elapsed_s=time.perf_counter() - started,
        timings_s=dict(problem.timings_s),
        solve_iterations=solution.iterations,
        n_clipped_pixels=n_clipped,
    )
    return Subtraction(
        difference=difference,
        variance=variance,
        coefficients=solution.modified,
        kernel_terms=kern_terms,
        background_terms=bg_terms,
        layout=layout,
        backend=be.NAME,
        stats=stats,
        cross_convolved=prep.science_side is not None,
        shape=shape,
        _science_var=prep.science_var,
        _template_var=prep.template_var,
        _science_side=prep.science_side,
        _template_side=prep.template_side,
        _science_psf=psf_s,
        _invalid=prep.invalid,
        _margin=prep.margin,
    )


def _evaluate(
    prep: Prepared, problem: fit.FitProblem, solution: fit.FitSolution, be: ModuleType
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The difference image and its variance for a solution (bad pixels not yet NaN), and the
    kernel and background terms."""
    layout = problem.layout
    shape = (int(prep.science.shape[0]), int(prep.science.shape[1]))
    nkt = layout.nk * layout.nt
    kern_terms = (
        solution.plain[:nkt].reshape(layout.side, layout.side, layout.nt).transpose(2, 0, 1).copy()
    )
    bg_terms = solution.plain[nkt:].copy()

    clock = time.perf_counter()
    # sum_t p_t(x) (T0 conv K_t)(x) = sum_ab (x^a y^b T0) conv K'_ab: the spectra of the
    # moment images are left over from the fit, so the model costs one inverse FFT.
    model = be.convolve_spectra(
        problem.model_spectra,
        basis.moment_kernels(layout, kern_terms, shape),
        problem.fft_shape,
        shape,
    )
    for b, (i, j) in enumerate(layout.background_exps):
        if i == j == 0:
            model += bg_terms[b]
        else:
            model += bg_terms[b] * basis.poly_image(i, j, shape)
    difference = prep.science - model
    del model
    problem.timings_s["model"] = problem.timings_s.get("model", 0.0) + (time.perf_counter() - clock)

    centre_kernel = np.tensordot(
        basis.poly_values(
            layout.kernel_exps,
            np.array([(shape[0] - 1) / 2]),
            np.array([(shape[1] - 1) / 2]),
            shape,
        )[:, 0],
        kern_terms,
        axes=1,
    )
    side_s = prep.science_side
    tside = (
        centre_kernel
        if prep.template_side is None
        else _conv_stamps(prep.template_side, centre_kernel)
    )
    if side_s is None:
        variance = be.convolve(prep.template_var, (tside**2)[None])[0]
        variance += prep.science_var
    else:  # both terms on one grid: one inverse FFT
        fsv = be.fft_shape(shape, max(tside.shape[0], side_s.shape[0]) // 2)
        variance = be.convolve_spectra(
            [be.rfft(prep.template_var, fsv), be.rfft(prep.science_var, fsv)],
            [tside**2, side_s**2],
            fsv,
            shape,
        )
    return difference, variance, kern_terms, bg_terms


def _conv_stamps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Full 2-D convolution of two small odd stamps (odd result)."""
    from scipy.signal import fftconvolve

    return np.asarray(fftconvolve(a, b, mode="full"))
