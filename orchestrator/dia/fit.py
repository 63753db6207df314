"""Solving the subtraction kernel's fit (both backends): the normal equations come from
:mod:`orchestrator.dia.normal`; here they are solved by Cholesky, or by conjugate gradients when
many left-out pixels were kept out of the formed matrix, and pixels can be left out after a
first solve (:func:`leave_out`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from orchestrator.dia import basis
from orchestrator.dia.backend import ComputeBackend
from orchestrator.dia.errors import DiaFitError
from orchestrator.dia.normal import DIRECT_ROWS_MAX, FitProblem, build_problem
from orchestrator.dia.rows import ExcludedRows, rank_update

__all__ = [
    "DIRECT_ROWS_MAX",
    "FitProblem",
    "FitSolution",
    "build_problem",
    "fit_kernel",
    "leave_out",
    "solve",
]

PCG_TOLERANCE = 1e-12  # relative residual |N x - b| / |b|
PCG_MAX_STEPS = 200


@dataclass
class FitSolution:
    """Coefficients in both bases, and how the solve went."""

    modified: np.ndarray
    plain: np.ndarray
    relative_residual: float  # |N x - b| / |b| of the solve (modified basis)
    iterations: int = 0  # conjugate-gradient steps (0: one direct Cholesky solve)


def _factor(matrix: np.ndarray) -> tuple[np.ndarray, bool]:
    try:
        factor, lower = sla.cho_factor(matrix, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        ridge = 1e-12 * float(np.trace(matrix)) / len(matrix)
        try:
            factor, lower = sla.cho_factor(matrix + ridge * np.eye(len(matrix)), lower=True)
        except np.linalg.LinAlgError as exc:
            raise DiaFitError("normal matrix is singular: is the template empty?") from exc
    return np.asarray(factor), bool(lower)


def solve(problem: FitProblem) -> FitSolution:
    """Solve ``R^T N R c = R^T b`` (modified basis) by Cholesky, or with ``problem.excluded``
    by conjugate gradients preconditioned with the Cholesky factor of the normal matrix
    without them (:func:`_pcg`)."""
    lay = problem.layout
    b = lay.to_modified_t(problem.rhs)
    matrix = lay.modified_matrix(problem.normal)
    factor = _factor(matrix)
    x = sla.cho_solve(factor, b, check_finite=False)
    iterations = 0
    if problem.excluded is None:
        rel = float(np.linalg.norm(matrix @ x - b)) / (float(np.linalg.norm(b)) or 1.0)
    else:
        x, rel, iterations = _pcg(matrix, factor, b, x, problem.excluded, lay)
    if not np.all(np.isfinite(x)):
        raise DiaFitError("kernel solution is not finite")
    return FitSolution(x, lay.to_plain(x), rel, iterations)


def _pcg(
    matrix: np.ndarray,
    factor: tuple[np.ndarray, bool],
    b: np.ndarray,
    x: np.ndarray,
    excluded: ExcludedRows,
    lay: basis.Layout,
) -> tuple[np.ndarray, float, int]:
    """Conjugate gradients on ``(M0 - R^T G R) x = b`` (``G`` the excluded rows), preconditioned
    by ``M0``'s Cholesky factor, from ``x`` (the solution with every pixel kept).

    ``M0^-1 (M0 - R^T G R)`` has its eigenvalues in (0, 1], near 1 unless a direction of the
    kernel is known mostly from the left-out pixels: on issue 9's scenes it converges to a
    relative residual of 1e-12 in 10-30 steps of ``2 |E| n`` work each, where forming ``G``
    costs ``|E| n^2``. Should it not converge (a fit that leaves out most of its information),
    ``G`` is formed after all and the system solved directly: slow, never wrong.
    """
    nkt = lay.nk * lay.nt

    def apply(v: np.ndarray) -> np.ndarray:
        g = np.zeros(lay.n_plain)
        g[:nkt] = excluded.matvec(lay.to_plain(v)[:nkt])
        return np.asarray(matrix @ v - lay.to_modified_t(g))

    b_norm = float(np.linalg.norm(b)) or 1.0
    r = b - apply(x)
    z = sla.cho_solve(factor, r, check_finite=False)
    p = z.copy()
    rz = float(r @ z)
    for step in range(1, PCG_MAX_STEPS + 1):
        q = apply(p)
        alpha = rz / float(p @ q)
        x = x + alpha * p
        r = r - alpha * q
        if float(np.linalg.norm(r)) <= PCG_TOLERANCE * b_norm:
            rel = float(np.linalg.norm(b - apply(x))) / b_norm  # the true residual
            if rel <= 10 * PCG_TOLERANCE:
                return x, rel, step
            r = b - apply(x)  # drifted: restart from the true residual
            restart = True
        else:
            restart = False
        z = sla.cho_solve(factor, r, check_finite=False)
        rz_new = float(r @ z)
        p = z if restart else z + (rz_new / rz) * p
        rz = rz_new
    # not converged: form the excluded rows' sum (exact, |E| n^2) and solve directly
    pad = 2 * lay.half_width
    t0p = np.pad(excluded.template0, pad)
    shape = (int(excluded.template0.shape[0]), int(excluded.template0.shape[1]))
    full = np.zeros((lay.n_plain, lay.n_plain))
    full[:nkt, :nkt] = rank_update(
        t0p, pad, excluded.rows, excluded.cols, -excluded.weights, lay, shape
    )
    exact = matrix + lay.modified_matrix(full)
    x = sla.cho_solve(_factor(exact), b, check_finite=False)
    rel = float(np.linalg.norm(exact @ x - b)) / b_norm
    return x, rel, PCG_MAX_STEPS


def leave_out(
    problem: FitProblem,
    science: np.ndarray,
    template0: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    weights: np.ndarray,
) -> None:
    """Take the pixels ``(rows, cols)`` (fit weights ``weights``) out of ``problem``, exactly:
    the right-hand side and the background blocks are corrected here, the kernel-kernel block
    by joining them to ``problem.excluded`` (so :func:`solve` runs conjugate gradients; the
    normal matrix's factor without them stays a good preconditioner). For outliers found
    after a first solve (star cores that no kernel subtracts, on undersampled images)."""
    lay = problem.layout
    nkt = lay.nk * lay.nt
    shape = (int(template0.shape[0]), int(template0.shape[1]))
    more = ExcludedRows(template0, rows, cols, weights, lay)
    s_w = weights * science[rows, cols]
    problem.rhs[:nkt] -= more.apply_t(s_w)
    q = basis.poly_values(lay.background_exps, rows, cols, shape)  # (nb, n)
    for b in range(lay.nb):
        col = more.apply_t(weights * q[b])
        problem.normal[:nkt, nkt + b] -= col
        problem.normal[nkt + b, :nkt] -= col
        problem.rhs[nkt + b] -= float(s_w @ q[b])
        for c in range(lay.nb):
            problem.normal[nkt + b, nkt + c] -= float((weights * q[b]) @ q[c])
    problem.excluded = more if problem.excluded is None else problem.excluded.joined(more)
    problem.n_e += len(rows)


def fit_kernel(
    science: np.ndarray,
    template0: np.ndarray,
    omega: np.ndarray,
    layout: basis.Layout,
    backend: ComputeBackend,
    direct_rows_max: int | None = None,
) -> tuple[FitProblem, FitSolution]:
    """Build the exact normal equations and solve them (see :func:`build_problem`)."""
    problem = build_problem(science, template0, omega, layout, backend, direct_rows_max)
    started = time.perf_counter()
    solution = solve(problem)
    problem.timings_s["solve"] = time.perf_counter() - started
    return problem, solution
