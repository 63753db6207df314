"""The fast DIA kernels against slow, obvious reference implementations on small images."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator import dia
from orchestrator.dia import basis, cpu, fit
from orchestrator.dia import rows as rows_mod
from tests.dia import reference

CASES = [
    # (w, DK, DB, constant_ratio)
    (2, 0, 0, True),
    (2, 1, 1, False),
    (3, 2, 0, True),
    (2, 2, 1, False),
]


def _random_inputs(seed: int, shape: tuple[int, int] = (40, 44), w: int = 2):
    rng = np.random.default_rng(seed)
    template = rng.normal(size=shape) + 0.3
    science = rng.normal(size=shape)
    omega = np.zeros(shape)
    omega[w:-w, w:-w] = rng.uniform(0.3, 1.0, size=(shape[0] - 2 * w, shape[1] - 2 * w))
    omega[10:14, 20:23] = 0.0  # a masked patch
    omega[rng.random(shape) < 0.5] = 1.0  # many pixels at full weight, as in practice
    omega[:w] = omega[-w:] = 0.0
    omega[:, :w] = omega[:, -w:] = 0.0
    template[12, 21] = 0.0  # a zero-filled bad template pixel
    return science, template, omega


@pytest.mark.parametrize(("w", "dk", "db", "cr"), CASES)
def test_normal_matrix_and_rhs_match_reference(w: int, dk: int, db: int, cr: bool) -> None:
    """The normal matrix (whole plane minus frame strips, corners, Omega < 1 rows) and the rhs
    equal A^T W A, A^T W s."""
    science, template, omega = _random_inputs(1, w=w)
    layout = basis.Layout(w, dk, db, cr)
    problem = fit.build_problem(science, template, omega, layout, cpu)
    n_ref, b_ref, _ = reference.normal_equations(science, template, omega, w, dk, db, cr)
    n_fast = layout.modified_matrix(problem.normal)
    b_fast = layout.to_modified_t(problem.rhs)
    assert np.max(np.abs(n_fast - n_ref)) <= 1e-10 * np.max(np.abs(n_ref))
    assert np.max(np.abs(b_fast - b_ref)) <= 1e-10 * np.max(np.abs(b_ref))


@pytest.mark.parametrize(("w", "dk", "db", "cr"), CASES)
def test_solution_matches_reference(w: int, dk: int, db: int, cr: bool) -> None:
    """The Cholesky solve of the exact normal equations gives the reference solution."""
    science, template, omega = _random_inputs(2, shape=(48, 48), w=w)
    layout = basis.Layout(w, dk, db, cr)
    _, solution = fit.fit_kernel(science, template, omega, layout, cpu)
    n_ref, b_ref, _ = reference.normal_equations(science, template, omega, w, dk, db, cr)
    x_ref = np.linalg.solve(n_ref, b_ref)
    assert np.max(np.abs(solution.modified - x_ref)) <= 1e-10 * np.max(np.abs(x_ref))


def test_basis_transform_is_its_own_transpose() -> None:
    """to_modified_t is the transpose of to_plain, so R^T N R is formed correctly."""
    layout = basis.Layout(2, 1, 1, True)
    rng = np.random.default_rng(0)
    r = layout.to_plain(np.eye(layout.n_unknowns))
    rt = layout.to_modified_t(np.eye(layout.n_plain))
    assert np.array_equal(r.T, rt)
    n = rng.normal(size=(layout.n_plain, layout.n_plain))
    assert np.allclose(layout.modified_matrix(n), r.T @ n @ r)


@pytest.mark.parametrize(("w", "dk", "db", "cr"), [(2, 1, 0, True), (3, 2, 1, False)])
def test_difference_image_matches_reference(w: int, dk: int, db: int, cr: bool) -> None:
    """subtract() returns S - A x_ref on the valid pixels, x_ref the reference least-squares fit."""
    rng = np.random.default_rng(5)
    shape = (48, 52)
    template = rng.normal(size=shape) + 1.0
    science = 0.8 * template + rng.normal(size=shape) * 0.5 + 0.2
    mask = np.zeros(shape, dtype=bool)
    mask[20, 30] = True
    sub = dia.subtract(
        science,
        template,
        mask=mask,
        kernel_half_width=w,
        kernel_poly_order=dk,
        background_poly_order=db,
        constant_ratio=cr,
        cross_convolve=False,
        backend="cpu",
    )
    prep = dia.prepare(
        science,
        template,
        science_psf=None,
        template_psf=None,
        science_var=None,
        template_var=None,
        mask=mask,
        half_width=w,
        weights=None,
        cross_convolve=False,
        backend=cpu,
    )
    n_ref, b_ref, a = reference.normal_equations(
        prep.science, prep.template, prep.omega, w, dk, db, cr
    )
    x_ref = np.linalg.solve(n_ref, b_ref)
    d_ref = (prep.science.ravel() - a @ x_ref).reshape(shape)
    valid = np.isfinite(sub.difference)
    assert valid.sum() == np.count_nonzero(~prep.invalid)
    scale = np.max(np.abs(science))
    assert np.max(np.abs(sub.difference[valid] - d_ref[valid])) <= 1e-10 * scale
    assert np.allclose(sub.coefficients, x_ref, rtol=0, atol=1e-10 * np.max(np.abs(x_ref)))


def test_kernel_at_and_sum_follow_the_coefficients() -> None:
    """kernel_at sums the spatial terms, and the kernel sum is the B_00 coefficient."""
    rng = np.random.default_rng(9)
    template = rng.normal(size=(48, 48)) + 1
    science = 1.2 * template + 0.1 * rng.normal(size=(48, 48))
    sub = dia.subtract(
        science,
        template,
        kernel_half_width=2,
        kernel_poly_order=1,
        cross_convolve=False,
        backend="cpu",
    )
    layout = sub.layout
    centre = sub.coefficients[(layout.nk - 1) * layout.nt]
    for x, y in [(0.0, 0.0), (47.0, 10.0), (23.5, 23.5)]:
        assert sub.kernel_sum_at(x, y) == pytest.approx(centre, rel=1e-12)
    assert sub.kernel_sum == pytest.approx(1.2, rel=0.02)


@pytest.mark.parametrize(("w", "dk", "db", "cr"), CASES)
def test_conjugate_gradient_solve_matches_the_direct_one(
    w: int, dk: int, db: int, cr: bool
) -> None:
    """With the Omega < 1 rows left to the solve (as on large frames), preconditioned conjugate
    gradients reach the reference solution too, in a few steps."""
    science, template, omega = _random_inputs(2, shape=(48, 48), w=w)
    layout = basis.Layout(w, dk, db, cr)
    problem, solution = fit.fit_kernel(science, template, omega, layout, cpu, direct_rows_max=0)
    assert problem.excluded is not None
    assert len(problem.excluded) > 500
    n_ref, b_ref, _ = reference.normal_equations(science, template, omega, w, dk, db, cr)
    x_ref = np.linalg.solve(n_ref, b_ref)
    assert 0 < solution.iterations < fit.PCG_MAX_STEPS
    assert solution.relative_residual <= 1e-11
    assert np.max(np.abs(solution.modified - x_ref)) <= 1e-10 * np.max(np.abs(x_ref))


def test_excluded_rows_operator_equals_the_formed_sum() -> None:
    """ExcludedRows.matvec is sum_e w_e a_e a_e^T v, pixels at the image edges included."""
    rng = np.random.default_rng(9)
    shape, layout = (30, 34), basis.Layout(3, 2, 0, True)
    template = rng.normal(size=shape)
    rows = np.array([0, 5, 29, 12, 3])
    cols = np.array([0, 33, 17, 2, 30])
    weights = rng.uniform(0.2, 1.0, size=5)
    op = rows_mod.ExcludedRows(template, rows, cols, weights, layout)
    pad = 2 * layout.half_width
    formed = rows_mod.rank_update(np.pad(template, pad), pad, rows, cols, weights, layout, shape)
    v = rng.normal(size=layout.nk * layout.nt)
    assert np.allclose(op.matvec(v), formed @ v, rtol=0, atol=1e-12 * np.abs(formed @ v).max())


def test_footprint_energy_is_the_design_rows_squared_norm() -> None:
    """footprint_energy is sum T0^2 over each pixel's footprint, zero outside the image: the
    squared norm of the constant-term part of its design row, at the edges too."""
    rng = np.random.default_rng(4)
    shape, layout = (25, 31), basis.Layout(4, 0, 0, True)
    template = rng.normal(size=shape)
    rows = np.array([0, 24, 12, 3, 20])
    cols = np.array([30, 0, 15, 2, 29])
    pad = 2 * layout.half_width
    a = rows_mod.design_rows(np.pad(template, pad), pad, rows, cols, layout, shape)
    energy = rows_mod.footprint_energy(template, rows, cols, layout.half_width)
    assert np.allclose(energy, np.sum(a**2, axis=1), rtol=1e-13, atol=0)


def test_conjugate_gradient_falls_back_to_the_formed_sum(monkeypatch: pytest.MonkeyPatch) -> None:
    """When conjugate gradients do not converge in time the excluded rows are formed after all:
    the solution is still the reference one."""
    w, dk, db, cr = CASES[2]
    science, template, omega = _random_inputs(2, shape=(48, 48), w=w)
    layout = basis.Layout(w, dk, db, cr)
    monkeypatch.setattr(fit, "PCG_MAX_STEPS", 1)
    formed = []

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        formed.append(len(args[2]))
        return rows_mod.rank_update(*args, **kwargs)

    monkeypatch.setattr(fit, "rank_update", spy)
    problem, solution = fit.fit_kernel(science, template, omega, layout, cpu, direct_rows_max=0)
    n_ref, b_ref, _ = reference.normal_equations(science, template, omega, w, dk, db, cr)
    x_ref = np.linalg.solve(n_ref, b_ref)
    assert problem.excluded is not None
    assert formed[-1] == len(problem.excluded)  # the excluded rows, formed in the fallback
    assert np.max(np.abs(solution.modified - x_ref)) <= 1e-10 * np.max(np.abs(x_ref))


@pytest.mark.parametrize(("w", "dk", "db", "cr"), CASES)
def test_leaving_pixels_out_after_the_fit_equals_fitting_without_them(
    w: int, dk: int, db: int, cr: bool
) -> None:
    """fit.leave_out (the outlier refit) gives the solution of the fit whose Omega is zero at
    those pixels from the start: right-hand side, background blocks and kernel block."""
    science, template, omega = _random_inputs(3, shape=(48, 48), w=w)
    layout = basis.Layout(w, dk, db, cr)
    rng = np.random.default_rng(4)
    inner = np.argwhere(omega > 0)
    pick = inner[rng.choice(len(inner), 60, replace=False)]
    rows, cols = pick[:, 0], pick[:, 1]
    problem, _ = fit.fit_kernel(science, template, omega, layout, cpu)
    fit.leave_out(problem, science, template, rows, cols, omega[rows, cols])
    after = fit.solve(problem)
    without = omega.copy()
    without[rows, cols] = 0.0
    _, direct = fit.fit_kernel(science, template, without, layout, cpu)
    assert after.iterations > 0
    scale = np.max(np.abs(direct.modified))
    assert np.max(np.abs(after.modified - direct.modified)) <= 1e-10 * scale
