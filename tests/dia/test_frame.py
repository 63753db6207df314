"""The pieces of the exact normal matrix (whole plane, frame strips, corners, Omega < 1 rows)
against brute-force sums of design-row outer products."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.dia import basis, cpu, fit, normal
from tests.dia.reference import brute_force_normal_matrix


def _omega(shape: tuple[int, int], frame: tuple[int, int, int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top, bottom, left, right = frame
    omega = np.zeros(shape)
    omega[top : shape[0] - bottom, left : shape[1] - right] = 1.0
    inner = omega[top : shape[0] - bottom, left : shape[1] - right]
    inner[rng.random(inner.shape) < 0.05] = 0.3  # down-weighted pixels
    inner[5:9, 7:10] = 0.0  # a masked patch
    return omega


@pytest.mark.parametrize(
    ("frame", "w", "dk"),
    [
        ((0, 0, 0, 0), 3, 1),  # no frame: the strips lie wholly outside the image
        ((3, 11, 5, 2), 3, 2),  # unequal sides, one wider than 2w
        ((14, 14, 14, 14), 4, 2),  # cross-convolution-like margin
    ],
)
def test_kernel_block_matches_brute_force(
    frame: tuple[int, int, int, int], w: int, dk: int
) -> None:
    """Whole plane - strips + corners - (1 - Omega) rows equals sum_x Omega a a^T exactly."""
    shape = (57, 63)
    rng = np.random.default_rng(3)
    template = rng.normal(size=shape) + 0.5
    template[20, 30] = 0.0
    omega = _omega(shape, frame, 4)
    layout = basis.Layout(w, dk, 0, True)
    problem = fit.build_problem(rng.normal(size=shape), template, omega, layout, cpu)
    brute = brute_force_normal_matrix(template, omega, layout)
    nkt = layout.nk * layout.nt
    assert normal.frame_widths(omega) == frame
    scale = np.max(np.abs(brute))
    assert np.max(np.abs(problem.normal[:nkt, :nkt] - brute)) <= 1e-12 * scale


def test_line_pair_moments_match_direct_sums() -> None:
    """The one-GEMM line-pair correlations equal the direct sums with zero beyond the ends."""
    rng = np.random.default_rng(0)
    lines = rng.normal(size=(4, 30))
    coords = np.linspace(-1, 1, 30)
    out = cpu.line_pair_moments(lines, coords, 5, 3)
    for r1 in range(4):
        for r2 in range(4):
            for d in range(-5, 6):
                for a in range(3):
                    ref = sum(
                        coords[u] ** a * lines[r1, u] * lines[r2, u + d]
                        for u in range(30)
                        if 0 <= u + d < 30
                    )
                    assert out[r1, r2, d + 5, a] == pytest.approx(ref, abs=1e-12)


def test_spectral_helpers_match_plain_ffts() -> None:
    """Moment spectra (FFT along x, then y), partial-DFT lags and kernel spectra equal the
    plain numpy transforms and direct correlations."""
    rng = np.random.default_rng(1)
    shape = (33, 40)
    image = rng.normal(size=shape)
    ref = rng.normal(size=shape)
    fshape = cpu.fft_shape(shape, 6)
    exps = basis.monomial_exponents(2)
    f_ref = np.fft.rfft2(ref, s=fshape)
    for m, spec in cpu.moment_spectra(image, exps, fshape):
        i, j = exps[m]
        plain = np.fft.rfft2(basis.poly_image(int(i), int(j), shape) * image, s=fshape)
        assert np.allclose(spec, plain, rtol=0, atol=1e-12 * np.abs(plain).max())
        lag = cpu.lags(spec, f_ref, 3)
        weighted = basis.poly_image(int(i), int(j), shape) * image
        for dy in range(-3, 4):
            for dx in range(-3, 4):
                shifted = np.zeros(shape)
                ys, xs = (
                    slice(max(0, dy), shape[0] + min(0, dy)),
                    slice(max(0, dx), shape[1] + min(0, dx)),
                )
                yo, xo = (
                    slice(max(0, -dy), shape[0] + min(0, -dy)),
                    slice(max(0, -dx), shape[1] + min(0, -dx)),
                )
                shifted[yo, xo] = ref[ys, xs]  # shifted[y] = ref[y + d]
                assert lag[dy + 3, dx + 3] == pytest.approx(np.sum(weighted * shifted), abs=1e-10)
    kern = rng.normal(size=(5, 5))
    grid = np.zeros(fshape)
    for a in range(5):
        for b in range(5):
            grid[(a - 2) % fshape[0], (b - 2) % fshape[1]] = kern[a, b]
    assert np.allclose(cpu.kernel_spectrum(kern, fshape), np.fft.rfft2(grid), atol=1e-12)


@pytest.mark.parametrize("dk", [0, 1, 2, 3])
def test_high_lag_moments_equal_direct_correlations(dk: int) -> None:
    """L_m(d) = sum_u u^m T0(u) T0(u + d) from the low moments' spectra only equals the
    correlation of each moment image with the template, for every m up to degree 2 DK."""
    shape, w = (45, 52), 3
    template = np.random.default_rng(dk).normal(size=shape) + 1.0
    fshape = cpu.fft_shape(shape, 2 * w)
    low_exps = basis.monomial_exponents(dk)
    mom_exps, mom_index = normal._moment_exponents(2 * dk)
    low = [spec for _, spec in sorted(cpu.moment_spectra(template, low_exps, fshape))]
    alphas = (basis.scale(shape[0])[0], basis.scale(shape[1])[0])
    fast = normal.high_lag_moments(low, low_exps, mom_exps, mom_index, alphas, w, cpu)
    ref_t = cpu.rfft(template, fshape)
    for m, spec in cpu.moment_spectra(template, mom_exps, fshape):
        direct = cpu.lags(spec, ref_t, 2 * w)
        assert np.max(np.abs(fast[m] - direct)) <= 1e-12 * np.max(np.abs(direct)), mom_exps[m]
