"""Resampling a rotated, dithered template onto the science grid through the two WCS."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.dia.pipeline.resample import jacobian_at, pixel_map, resample
from orchestrator.dia.simulate import PIXEL_SCALE_ARCSEC, _add_source, make_wcs
from tests.dia import reference

N = 96


def _pair() -> tuple[object, object]:
    dx = 7.3 * PIXEL_SCALE_ARCSEC / 3600
    science = make_wcs((30.0, 10.0), 0.0, N)
    template = make_wcs((30.0 + dx, 10.0 - dx / 2), 6.0, N)  # dithered and rotated by 6 degrees
    return science, template


def test_star_lands_where_the_wcs_says_with_its_flux() -> None:
    """A star rendered on the template lands at its sky position on the science grid, flux kept."""
    sw, tw = _pair()
    ra, dec = sw.all_pix2world([[40.3, 51.7]], 0)[0]  # type: ignore[attr-defined]
    tx, ty = tw.all_world2pix([[ra, dec]], 0)[0]  # type: ignore[attr-defined]
    img = np.zeros((N, N))
    _add_source(img, float(tx), float(ty), 1000.0, 0.7)  # undersampled: core FWHM 1.6 px
    xs, ys = pixel_map(sw, tw, (N, N))
    res = resample(img, np.ones((N, N)), np.zeros((N, N), bool), xs, ys)
    stamp = res.image[51 - 6 : 51 + 7, 40 - 6 : 40 + 7]
    yy, xx = np.mgrid[-6:7, -6:7]
    assert abs(stamp.sum() - 1000.0) < 10.0  # 1 %: interpolation of an undersampled star
    cx, cy = (stamp * xx).sum() / stamp.sum() + 40, (stamp * yy).sum() / stamp.sum() + 51
    assert abs(cx - 40.3) < 0.05
    assert abs(cy - 51.7) < 0.05
    assert np.allclose(np.abs(np.linalg.det(jacobian_at(sw, tw, 40.0, 50.0))), 1.0, atol=1e-6)


def test_variance_is_propagated() -> None:
    """Pure noise of variance V resamples to pixels of variance sum(w^2) V and local power V."""
    sw, tw = _pair()
    rng = np.random.default_rng(5)
    v = 4.0
    xs, ys = pixel_map(sw, tw, (N, N))
    outs = []
    for _ in range(40):
        noise = rng.normal(0, np.sqrt(v), (N, N))
        outs.append(resample(noise, np.full((N, N), v), np.zeros((N, N), bool), xs, ys))
    good = ~outs[0].mask
    stack = np.array([o.image[good] for o in outs])
    assert abs(stack.var() / np.mean(outs[0].variance[good]) - 1) < 0.05
    assert np.allclose(outs[0].noise_power[good], v)
    # 4x4 block sums see the low-frequency power: their variance is about 16 V
    blocks = [o.image[20:76, 20:76].reshape(14, 4, 14, 4).sum(axis=(1, 3)).ravel() for o in outs]
    assert abs(np.var(blocks) / (16 * v) - 1) < 0.12


def test_bad_and_missing_template_pixels_are_masked() -> None:
    """A flagged template pixel marks its interpolation footprint; uncovered pixels are NaN."""
    sw, tw = _pair()
    xs, ys = pixel_map(sw, tw, (N, N))
    mask = np.zeros((N, N), bool)
    mask[48, 48] = True
    res = resample(np.ones((N, N)), np.ones((N, N)), mask, xs, ys)
    assert 16 <= res.mask[30:70, 30:70].sum() <= 49
    assert np.isnan(res.image[res.outside]).all()
    assert res.outside.any()
    assert 0.8 < res.coverage < 1.0


def _random_inputs(seed: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A noisy image with flagged pixels, a bad column, and NaN image and variance pixels."""
    rng = np.random.default_rng(seed)
    img = rng.normal(100.0, 10.0, shape)
    var = rng.uniform(50.0, 150.0, shape)
    mask = rng.random(shape) < 0.01
    mask[:, shape[1] // 3] = True
    img[rng.random(shape) < 0.005] = np.nan
    var[rng.random(shape) < 0.005] = np.inf
    return img, var, mask


def _assert_matches_reference(res: object, ref: tuple) -> None:
    img, var, npow, bad, lost, coverage = ref
    assert np.array_equal(res.outside, lost)  # type: ignore[attr-defined]
    assert np.array_equal(res.mask, bad)  # type: ignore[attr-defined]
    assert res.coverage == coverage  # type: ignore[attr-defined]
    for got, want in ((res.image, img), (res.variance, var), (res.noise_power, npow)):  # type: ignore[attr-defined]
        assert np.array_equal(np.isnan(got), np.isnan(want))
        ok = ~np.isnan(want)
        assert np.allclose(got[ok], want[ok], rtol=1e-10, atol=1e-10 * np.abs(want[ok]).max())


def test_kernel_matches_numpy_reference_through_rotated_dithered_wcs() -> None:
    """The Numba kernel gives the NumPy reference's image, variances and masks to 1e-10 through
    a rotated, dithered WCS pair, edges (partial coverage) included."""
    sw, tw = _pair()
    xs, ys = pixel_map(sw, tw, (N, N))
    img, var, mask = _random_inputs(1, (N, N))
    res = resample(img, var, mask, xs, ys)
    assert res.outside.any()
    assert not res.outside.all()
    _assert_matches_reference(res, reference.resample(img, var, mask, xs, ys))


def test_kernel_matches_numpy_reference_on_random_maps() -> None:
    """On random smooth maps (shear, scale, shifts off every edge, integer positions) and a
    non-square template, the kernel and the reference agree to 1e-10."""
    rng = np.random.default_rng(7)
    img, var, mask = _random_inputs(2, (70, 53))
    yy, xx = np.mgrid[0:64, 0:80].astype(float)
    for _ in range(4):
        m = np.eye(2) + rng.normal(0, 0.1, (2, 2))
        x0, y0 = rng.uniform(-10, 10, 2)
        xs = m[0, 0] * xx + m[0, 1] * yy + x0 + 0.01 * np.sin(yy / 7)
        ys = m[1, 0] * xx + m[1, 1] * yy + y0
        _assert_matches_reference(
            resample(img, var, mask, xs, ys), reference.resample(img, var, mask, xs, ys)
        )
    # integer positions: every weight but the centre tap is zero
    xs, ys = xx[:40, :40] + 3.0, yy[:40, :40] + 5.0
    res = resample(img, var, mask, xs, ys)
    _assert_matches_reference(res, reference.resample(img, var, mask, xs, ys))
    ok = ~res.mask
    assert np.array_equal(res.image[ok], img[5:45, 3:43][ok])


def test_nan_coordinates_are_outside() -> None:
    """A non-finite source coordinate is reported outside and NaN, not read from memory."""
    img, var, mask = _random_inputs(3, (20, 20))
    yy, xx = np.mgrid[0:10, 0:10].astype(float) + 5.0
    xx[4, 4] = np.nan
    res = resample(img, var, mask, xx, yy)
    assert res.outside[4, 4]
    assert res.mask[4, 4]
    assert np.isnan(res.image[4, 4])
    assert res.outside.sum() == 1


def test_shape_mismatch_is_rejected() -> None:
    """Inputs of different shapes are a ValueError naming the shapes, not a crash in the kernel."""
    img, var, mask = _random_inputs(4, (20, 20))
    yy, xx = np.mgrid[0:10, 0:10].astype(float)
    with pytest.raises(ValueError, match="variance"):
        resample(img, var[:10], mask, xx, yy)
    with pytest.raises(ValueError, match="x_src"):
        resample(img, var, mask, xx, yy[:5])
