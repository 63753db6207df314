"""The sky background mesh (Numba clipped medians, separable spline) against the NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.dia.pipeline.background import background, clipped_stats, inpaint
from tests.dia import reference


def _sky(seed: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A sloped, wavy sky with noise, bright stars, NaN pixels, a masked corner and bad column."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    img = 100.0 + 0.05 * xx - 0.03 * yy + 5.0 * np.sin(xx / 40.0) + rng.normal(0, 3.0, shape)
    for _ in range(shape[0] * shape[1] // 400):
        img[rng.integers(shape[0]), rng.integers(shape[1])] += rng.uniform(50, 5000)
    img[rng.random(shape) < 0.002] = np.nan
    mask = rng.random(shape) < 0.01
    mask[: shape[0] // 3, : shape[1] // 3] = True  # whole cells masked: filled from the others
    mask[:, shape[1] // 2] = True
    return img, mask


@pytest.mark.parametrize(
    ("shape", "box_px"),
    [((300, 260), 32), ((200, 200), 64), ((150, 90), 64), ((64, 300), 64), ((40, 40), 64)],
)
def test_background_matches_reference(shape: tuple[int, int], box_px: int) -> None:
    """Cubic (mesh >= 4 cells), linear (thinner meshes) and single-cell backgrounds equal the
    per-pixel map_coordinates reference to 1e-10 relative."""
    img, mask = _sky(shape[0] + box_px, shape)
    got = background(img, mask, box_px)
    want = reference.background(img, mask, box_px)
    assert got.shape == want.shape
    assert np.allclose(got, want, rtol=1e-10, atol=0.0)


def test_all_masked_background_is_zero() -> None:
    """An image with every pixel masked has a zero background, as before."""
    img, _ = _sky(1, (100, 100))
    got = background(img, np.ones(img.shape, bool), 32)
    assert np.array_equal(got, np.zeros_like(img))


def test_clipped_stats_matches_reference() -> None:
    """Clipped median and MAD equal the NumPy reference exactly: clipping, even and odd counts,
    non-finite values, a constant array (MAD 0) and an empty one."""
    rng = np.random.default_rng(3)
    cases = [
        np.concatenate([rng.normal(10, 2, 5000), rng.uniform(100, 1e4, 300)]),
        rng.normal(0, 1, 4097),
        np.array([1.0, np.nan, np.inf, 3.0]),
        np.full(50, 7.0),
        np.array([np.nan]),
    ]
    for values in cases:
        assert clipped_stats(values) == reference.clipped_stats(values)
    assert clipped_stats(cases[0], nsigma=2.0, iterations=1) == reference.clipped_stats(
        cases[0], nsigma=2.0, iterations=1
    )


@pytest.mark.parametrize("sigma_px", [1.0, 1.7])
def test_inpaint_matches_reference(sigma_px: float) -> None:
    """Hot pixels, a bad column, a large hole (many rounds), edge and corner pixels fill with the
    whole-image Gaussian filter reference's values to 1e-12, leaving good pixels untouched."""
    rng = np.random.default_rng(11)
    shape = (120, 90)
    img = rng.normal(50.0, 5.0, shape)
    mask = rng.random(shape) < 0.01
    mask[:, 40] = True
    mask[60:75, 10:30] = True  # fills ring by ring
    mask[0, 0] = mask[-1, -1] = mask[0, 50] = True
    got = inpaint(img, mask, sigma_px)
    want = reference.inpaint(img, mask, sigma_px)
    assert np.array_equal(got[~mask], img[~mask])
    assert np.allclose(got, want, rtol=1e-12, atol=0.0)
    # a hole larger than the rounds allow is finished with the median of the rest
    few = inpaint(img, mask, sigma_px, rounds=2)
    assert np.allclose(few, reference.inpaint(img, mask, sigma_px, rounds=2), rtol=1e-12, atol=0)


def test_inpaint_of_an_all_masked_image_is_zero() -> None:
    """Nothing to fill from: every pixel becomes 0, as before."""
    img = np.ones((20, 20))
    got = inpaint(img, np.ones((20, 20), bool))
    assert np.array_equal(got, reference.inpaint(img, np.ones((20, 20), bool)))
    assert not got.any()


def test_clipped_stats_matches_reference_on_ties_and_small_counts() -> None:
    """The in-place quickselect gives NumPy's medians exactly: 1 to 40 values, many ties
    (integer-valued counts), sorted and reversed inputs."""
    rng = np.random.default_rng(12)
    for n in [*range(1, 41), 257, 1000]:
        for values in (
            rng.normal(0, 1, n),
            rng.poisson(3.0, n).astype(float),
            np.sort(rng.normal(0, 1, n)),
            np.sort(rng.normal(0, 1, n))[::-1].copy(),
        ):
            assert clipped_stats(values) == reference.clipped_stats(values), (n, values)
