"""The subtraction: masking, cross-convolution, the kernel fit, the difference and its variance
(see :func:`subtract`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.ndimage import binary_dilation

from orchestrator.dia import basis, fit
from orchestrator.dia.backend import Backend, ComputeBackend, get_backend
from orchestrator.dia.errors import DiaFitError, DiaInputError
from orchestrator.dia.result import FitStats, Subtraction, _dilate

CLIP_ROUNDS = 3  # at most this many refits after clipping outliers (subtract's clip_sigma)


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
    backend: ComputeBackend,
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
        # in double precision: single precision (tried) leaves roundoff at the frequencies the
        # PSFs suppress, which the decorrelation filter amplifies into a checkerboard
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
    keep = clip_sigma is not None  # a refit needs the moment spectra for its model again
    difference, variance, kern_terms, bg_terms = _evaluate(prep, problem, solution, be, keep)
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
        difference, variance, kern_terms, bg_terms = _evaluate(prep, problem, solution, be, keep)
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
    prep: Prepared,
    problem: fit.FitProblem,
    solution: fit.FitSolution,
    be: ComputeBackend,
    keep_spectra: bool = False,
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
        list(basis.moment_kernels(layout, kern_terms, shape)),
        problem.fft_shape,
        shape,
    )
    for b, (i, j) in enumerate(layout.background_exps):
        if i == j == 0:
            model += bg_terms[b]
        else:
            model += bg_terms[b] * basis.poly_image(i, j, shape)
    if not keep_spectra:  # 814 MB on a whole 4088^2 frame: gone before the variance's FFTs
        problem.model_spectra.clear()
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
    else:  # both terms on one grid: one inverse FFT, in single precision (a variance needs no
        # more than 1e-7 of itself; the FFTs are twice as fast)
        fsv = be.fft_shape(shape, max(tside.shape[0], side_s.shape[0]) // 2)
        variance = be.convolve_spectra(
            [
                be.rfft(prep.template_var.astype(np.float32), fsv),
                be.rfft(prep.science_var.astype(np.float32), fsv),
            ],
            [tside**2, side_s**2],
            fsv,
            shape,
        )
    return difference, variance, kern_terms, bg_terms


def _conv_stamps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Full 2-D convolution of two small odd stamps (odd result)."""
    from scipy.signal import fftconvolve

    return np.asarray(fftconvolve(a, b, mode="full"))
