"""Least-squares fit of the subtraction kernel, shared by both backends.

The objective is exact weighted least squares over the fit pixels:

    minimise  sum_x Omega(x) [S(x) - sum_{k,t} c[k,t] p_t(x) T0(x - k) - sum_b d_b q_b(x)]^2

with ``Omega`` in [0, 1] (0 off the fit pixels) and ``T0`` the template, zero outside the image
(no wrap-around) and at bad pixels. The kernel-kernel block of the normal matrix is the expensive
part; with ``Omega == 1`` over the whole plane it is shift invariant, so it follows from lag
correlations of the polynomial-weighted template with itself (all lags within +-2w from a few
FFTs; the polynomial weights are moved onto the lag with the binomial theorem). The difference
to the true block is a sum over the few pixels ``E`` where ``Omega < 1`` (the edge frame, bad
pixels and their kernel footprints, down-weighted pixels). Rather than forming that correction
(``|E| * N^2`` work) the system is solved by conjugate gradients, preconditioned with the
Cholesky factor of the all-pixel matrix, and each product with the correction costs ``|E| * N``.
The other blocks (kernel-background, right-hand side) involve one template factor only and are
exact FFT correlations with ``Omega`` applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import scipy.linalg as sla

from orchestrator.dia import basis
from orchestrator.dia.errors import DiaFitError


@dataclass
class FitProblem:
    """Host-side pieces of one fit: the all-pixel system and the correction operator."""

    layout: basis.Layout
    normal_all: np.ndarray  # plain basis, Omega = 1 on the whole plane for the kk block
    rhs: np.ndarray  # plain basis
    e_op: Any  # backend EOperator
    n_e: int


@dataclass
class FitSolution:
    """Coefficients in both bases, and how the solve went."""

    modified: np.ndarray
    plain: np.ndarray
    cg_iterations: int
    cg_relative_residual: float


def _moment_exponents(order: int) -> tuple[np.ndarray, np.ndarray]:
    exps = basis.monomial_exponents(order)
    index = np.full((order + 1, order + 1), -1, dtype=np.int64)
    for m, (i, j) in enumerate(exps):
        index[i, j] = m
    return exps, index


def build_problem(
    science: np.ndarray,
    template0: np.ndarray,
    omega: np.ndarray,
    layout: basis.Layout,
    backend: ModuleType,
) -> FitProblem:
    """Normal matrix over all pixels, right-hand side and correction operator (see module doc)."""
    shape = science.shape
    w = layout.half_width
    kexps, bexps = layout.kernel_exps, layout.background_exps
    nk, nt, nb = layout.nk, layout.nt, layout.nb
    mom_exps, mom_index = _moment_exponents(2 * layout.kernel_order)

    # One FFT pass: kk moments need lags up to 2w, the others up to w.
    images: list[np.ndarray] = [basis.poly_image(i, j, shape) * template0 for i, j in mom_exps]
    kb_pairs = [(t, b) for t in range(nt) for b in range(nb)]
    mixed_exps = sorted(
        {(int(kexps[t, 0] + bexps[b, 0]), int(kexps[t, 1] + bexps[b, 1])) for t, b in kb_pairs}
    )
    images += [basis.poly_image(i, j, shape) * omega for i, j in mixed_exps]
    weighted_science = omega * science
    images += [basis.poly_image(i, j, shape) * weighted_science for i, j in kexps]
    lags = backend.xcorr_lags(images, template0, 2 * w)
    n_mom, n_mixed = len(mom_exps), len(mixed_exps)

    kk = backend.assemble_kk(
        np.ascontiguousarray(lags[:n_mom]),
        mom_index,
        kexps,
        basis.scale(shape[0])[0],
        basis.scale(shape[1])[0],
        w,
    )
    centre = slice(w, 3 * w + 1)

    def at_minus_k(lag_image: np.ndarray) -> np.ndarray:
        # sum_x A(x) T0(x - k) is the correlation at lag d = -k: flip both axes.
        return lag_image[centre, centre][::-1, ::-1].ravel()

    normal = np.zeros((layout.n_plain, layout.n_plain))
    normal[: nk * nt, : nk * nt] = kk
    for t, b in kb_pairs:
        m = mixed_exps.index((int(kexps[t, 0] + bexps[b, 0]), int(kexps[t, 1] + bexps[b, 1])))
        col = at_minus_k(lags[n_mom + m])
        normal[t : nk * nt : nt, nk * nt + b] = col
        normal[nk * nt + b, t : nk * nt : nt] = col
    qimgs = [basis.poly_image(i, j, shape) for i, j in bexps]
    for b in range(nb):
        for c in range(nb):
            normal[nk * nt + b, nk * nt + c] = float(np.sum(omega * qimgs[b] * qimgs[c]))
    rhs = np.zeros(layout.n_plain)
    for t in range(nt):
        rhs[t : nk * nt : nt] = at_minus_k(lags[n_mom + n_mixed + t])
    for b in range(nb):
        rhs[nk * nt + b] = float(np.sum(weighted_science * qimgs[b]))

    rows, cols, wgt = e_pixels(template0, omega, w)
    pvals = basis.poly_values(kexps, rows, cols, shape)
    t0p = np.pad(template0, 2 * w)
    e_op = backend.EOperator(t0p, 2 * w, rows, cols, wgt, pvals, w)
    return FitProblem(layout, normal, rhs, e_op, len(rows))


def e_pixels(
    template0: np.ndarray, omega: np.ndarray, half_width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels (image coordinates, possibly outside the image by up to w) with ``Omega < 1``
    whose kernel footprint touches a non-zero template pixel, and their weights ``1 - Omega``."""
    from scipy.ndimage import maximum_filter

    w = half_width
    big = np.zeros((omega.shape[0] + 2 * w, omega.shape[1] + 2 * w))
    big[w : -w or None, w : -w or None] = omega
    support = np.pad(template0 != 0, w)
    support = maximum_filter(support, size=2 * w + 1, mode="constant", cval=0)
    rows, cols = np.nonzero((big < 1.0) & support)
    wgt = 1.0 - big[rows, cols]
    return rows - w, cols - w, wgt


def _factor(matrix: np.ndarray) -> tuple[np.ndarray, bool]:
    try:
        return sla.cho_factor(matrix, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        ridge = 1e-12 * float(np.trace(matrix)) / len(matrix)
        try:
            return sla.cho_factor(matrix + ridge * np.eye(len(matrix)), lower=True)
        except np.linalg.LinAlgError as exc:
            raise DiaFitError("normal matrix is singular: is the template empty?") from exc


def solve(
    problem: FitProblem,
    *,
    tol: float = 1e-13,
    max_iter: int = 300,
    dense: np.ndarray | None = None,
) -> FitSolution:
    """Solve ``R^T (N_all - N_E) R c = R^T b``.

    With ``dense`` (the plain normal matrix, correction included) it is a Cholesky solve;
    otherwise preconditioned conjugate gradients with the all-pixel matrix as preconditioner.
    """
    lay = problem.layout
    nkt = lay.nk * lay.nt
    b = lay.to_modified_t(problem.rhs)
    if dense is not None:
        x = sla.cho_solve(_factor(lay.modified_matrix(dense)), b, check_finite=False)
        if not np.all(np.isfinite(x)):
            raise DiaFitError("kernel solution is not finite")
        return FitSolution(x, lay.to_plain(x), 0, 0.0)
    n_all = lay.modified_matrix(problem.normal_all)
    factor = _factor(n_all)

    def precond(v: np.ndarray) -> np.ndarray:
        return sla.cho_solve(factor, v, check_finite=False)

    def apply(v: np.ndarray) -> np.ndarray:
        plain = lay.to_plain(v)
        corr = np.zeros_like(plain)
        if problem.n_e:
            corr[:nkt] = problem.e_op.apply(plain[:nkt].reshape(lay.nk, lay.nt)).ravel()
        return n_all @ v - lay.to_modified_t(corr)

    b_norm = float(np.linalg.norm(b)) or 1.0
    x = precond(b)
    r = b - apply(x)
    rel = float(np.linalg.norm(r)) / b_norm
    iterations = 0
    if rel > tol:
        z = precond(r)
        p = z.copy()
        rz = float(r @ z)
        for iterations in range(1, max_iter + 1):  # noqa: B007 - reported below
            ap = apply(p)
            alpha = rz / float(p @ ap)
            x += alpha * p
            r -= alpha * ap
            rel = float(np.linalg.norm(r)) / b_norm
            if rel <= tol:
                break
            z = precond(r)
            rz_new = float(r @ z)
            p = z + (rz_new / rz) * p
            rz = rz_new
    if not np.all(np.isfinite(x)):
        raise DiaFitError("kernel solution is not finite")
    return FitSolution(x, lay.to_plain(x), iterations, rel)


def dense_normal_matrix(
    problem: FitProblem, template0: np.ndarray, omega: np.ndarray, *, chunk: int = 2048
) -> np.ndarray:
    """The plain normal matrix with the correction formed explicitly (``|E| N^2`` work).

    Cheaper than conjugate gradients when the correction set is a large part of the fit (small
    images, large masked areas), and the oracle-friendly form used by the tests.
    """
    lay = problem.layout
    w = lay.half_width
    rows, cols, wgt = e_pixels(template0, omega, w)
    pvals = basis.poly_values(lay.kernel_exps, rows, cols, template0.shape)
    t0p = np.pad(template0, 2 * w)
    offs = lay.offsets()
    out = problem.normal_all.copy()
    nkt = lay.nk * lay.nt
    for start in range(0, len(rows), chunk):
        sl = slice(start, start + chunk)
        r = rows[sl, None] - offs[None, :, 0] + 2 * w
        c = cols[sl, None] - offs[None, :, 1] + 2 * w
        design = (t0p[r, c][:, :, None] * pvals[:, sl].T[:, None, :]).reshape(len(r), -1)
        out[:nkt, :nkt] -= design.T @ (wgt[sl, None] * design)
    return out


def fit_kernel(
    science: np.ndarray,
    template0: np.ndarray,
    omega: np.ndarray,
    layout: basis.Layout,
    backend: ModuleType,
    *,
    method: str = "auto",
) -> tuple[FitProblem, FitSolution]:
    """Build and solve; ``method`` is ``dense``, ``cg`` or ``auto``.

    ``auto`` forms the correction when its pixels outnumber a fifth of the fit pixels (CG then
    converges slowly and the dense work is small), and otherwise uses CG, falling back to the
    dense form if CG does not converge.
    """
    problem = build_problem(science, template0, omega, layout, backend)
    n_fit = int(np.count_nonzero(omega))
    if method == "dense" or (method == "auto" and problem.n_e > 0.2 * n_fit):
        dense = dense_normal_matrix(problem, template0, omega)
        return problem, solve(problem, dense=dense)
    solution = solve(problem)
    if method == "auto" and solution.cg_relative_residual > 1e-9:
        dense = dense_normal_matrix(problem, template0, omega)
        return problem, solve(problem, dense=dense)
    return problem, solution
