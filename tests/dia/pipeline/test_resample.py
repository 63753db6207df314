"""Resampling a rotated, dithered template onto the science grid through the two WCS."""

from __future__ import annotations

import numpy as np

from orchestrator.dia.pipeline.resample import jacobian_at, pixel_map, resample
from orchestrator.dia.simulate import PIXEL_SCALE_ARCSEC, _add_source, make_wcs

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
    assert abs(cx - 40.3) < 0.05 and abs(cy - 51.7) < 0.05
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
    assert np.isnan(res.image[res.outside]).all() and res.outside.any()
    assert 0.8 < res.coverage < 1.0
