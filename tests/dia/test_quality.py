"""Subtraction and photometry quality on synthetic scenes with known truth (notes/dia.md)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import fftconvolve

from orchestrator import dia
from tests.dia.scenes import gaussian_psf, make_scene, render

SHAPE = (160, 160)
W, DK = 4, 1


def _subtract(scene, science=None, **kw):
    opts = dict(
        science_psf=scene.science_psf,
        template_psf=scene.template_psf,
        science_var=scene.science_var,
        template_var=scene.template_var,
        kernel_half_width=W,
        kernel_poly_order=DK,
        backend="cpu",
    )
    opts.update(kw)
    science = scene.science if science is None else science
    return dia.subtract(science, scene.template, **opts)


def _z(image: np.ndarray, variance: np.ndarray) -> np.ndarray:
    z = image / np.sqrt(variance)
    return z[np.isfinite(z)]


def test_null_test_gives_unit_normal_residuals() -> None:
    """Without a transient, D/sigma (raw and decorrelated) has mean ~ 0 and std 1 +- 0.05."""
    zs, zd = [], []
    for seed in range(4):
        scene = make_scene(np.random.default_rng(seed), SHAPE, ratio=1.2)
        sub = _subtract(scene)
        zs.append(_z(sub.difference, sub.variance))
        dec = sub.decorrelate()
        zd.append(_z(dec.image, dec.variance))
        img = np.where(np.isfinite(dec.image), dec.image, 0)
        lag1 = np.sum(img[:, 1:] * img[:, :-1]) / np.sum(img * img)
        assert abs(lag1) < 0.1, "decorrelated difference keeps pixel-to-pixel correlation"
    for z in (np.concatenate(zs), np.concatenate(zd)):
        assert abs(z.mean()) < 0.02
        assert abs(z.std() - 1) < 0.05


def test_kernel_sum_matches_true_flux_ratio() -> None:
    """The fitted kernel sum equals the true photometric ratio to 1e-3 (bright, deep scene)."""
    for ratio in (0.7, 1.35):
        scene = make_scene(
            np.random.default_rng(11),
            SHAPE,
            ratio=ratio,
            n_stars=40,
            sky_science=20.0,
            sky_template=5.0,
            template_depth=20.0,
            flux_range=(2e4, 2e5),
        )
        sub = _subtract(scene)
        assert abs(sub.kernel_sum / ratio - 1) < 1e-3


def test_gaussian_to_gaussian_kernel_is_recovered() -> None:
    """Matching a sigma=1.0 template to a sigma=1.6 science gives a Gaussian kernel of
    sigma = sqrt(1.6^2 - 1.0^2), with unit sum and no centroid shift."""
    scene = make_scene(
        np.random.default_rng(3),
        SHAPE,
        sigma_science=1.6,
        sigma_template=1.0,
        n_stars=60,
        sky_science=10.0,
        sky_template=2.0,
        template_depth=20.0,
        flux_range=(1e4, 1e5),
    )
    sub = _subtract(scene, cross_convolve=False, kernel_poly_order=0)
    kern = sub.kernel_at(80, 80)
    # The pixel basis leaves high-frequency noise that the template PSF cannot see, so compare
    # what matters: the template PSF through the kernel, and the kernel's moments.
    matched = fftconvolve(kern, gaussian_psf(1.0, 7), mode="full")[W:-W, W:-W]
    assert np.abs(matched - gaussian_psf(1.6, 7)).sum() < 0.02
    r = np.arange(-W, W + 1)
    assert abs((kern.sum(1) * r).sum()) < 0.01
    assert abs((kern.sum(0) * r).sum()) < 0.01
    width = np.sqrt((kern.sum(1) * r * r).sum() / kern.sum())
    assert width == pytest.approx(np.sqrt(1.6**2 - 1.0**2), abs=0.02)


def test_sub_pixel_shift_is_absorbed_by_the_kernel() -> None:
    """A (0.3, -0.4) pixel misregistration moves the kernel centroid by that much and leaves
    a clean (unit-normal) difference image."""
    scene = make_scene(
        np.random.default_rng(4),
        SHAPE,
        science_offset=(0.3, -0.4),
        sky_science=20.0,
        flux_range=(5e3, 5e4),
    )
    sub = _subtract(scene, cross_convolve=False, kernel_poly_order=0)
    kern = sub.kernel_at(80, 80)
    r = np.arange(-W, W + 1)
    cy, cx = (kern.sum(1) * r).sum() / kern.sum(), (kern.sum(0) * r).sum() / kern.sum()
    assert cy == pytest.approx(0.3, abs=0.02)
    assert cx == pytest.approx(-0.4, abs=0.02)
    z = _z(sub.difference, sub.variance)
    assert abs(z.std() - 1) < 0.05


def _transient_run(flux: float, n_images: int, seed0: int) -> tuple[np.ndarray, np.ndarray]:
    """Fluxes and errors of transients injected on a 3x3 grid in ``n_images`` realisations."""
    fluxes, errors = [], []
    grid = [(40.3 + 40 * i, 40.7 + 40 * j) for i in range(3) for j in range(3)]
    for seed in range(seed0, seed0 + n_images):
        rng = np.random.default_rng(seed)
        scene = make_scene(rng, SHAPE, ratio=1.1, star_seed=1000 + seed)
        extra = render(SHAPE, [g[0] for g in grid], [g[1] for g in grid], [flux] * 9, 1.6, 7)
        scene.science = scene.science + extra + rng.normal(size=SHAPE) * np.sqrt(extra)
        scene.science_var = scene.science_var + extra
        exclude = np.zeros(SHAPE, dtype=bool)
        for x, y in grid:
            exclude[int(y) - 8 : int(y) + 9, int(x) - 8 : int(x) + 9] = True
        sub = _subtract(scene, fit_exclude=exclude)
        for x, y in grid:
            dec = sub.decorrelate(x, y)
            ph = dia.forced_photometry(dec.image, dec.variance, dec.psf, x, y)
            fluxes.append(ph.flux)
            errors.append(ph.flux_err)
    return np.array(fluxes), np.array(errors)


@pytest.mark.parametrize("flux", [300.0, 20000.0])
def test_injected_transients_quick(flux: float) -> None:
    """A few realisations: transient fluxes are recovered within 3 sigma of the mean."""
    f, e = _transient_run(flux, 2, 100)
    pulls = (f - flux) / e
    assert abs(pulls.mean()) < 3 / np.sqrt(len(pulls))
    assert 0.6 < pulls.std() < 1.4


@pytest.mark.slow
@pytest.mark.parametrize("flux", [150.0, 1000.0, 5000.0, 30000.0])
def test_injected_transients_bias_and_pulls(flux: float) -> None:
    """Over 225 transients: bias < 0.5 % (or < 0.1 sigma when faint) and pull std 1 +- 0.1."""
    f, e = _transient_run(flux, 25, 200)
    pulls = (f - flux) / e
    bias = (f.mean() - flux) / flux
    assert abs(bias) < 0.005 or abs(pulls.mean()) < 0.1
    assert abs(pulls.std() - 1) < 0.1


def test_forced_photometry_of_a_known_source_with_truncated_stamp() -> None:
    """PSF photometry is unbiased with correct errors, also when the stamp cuts the PSF wings
    (the profile is normalised by the full PSF's sum)."""
    rng = np.random.default_rng(0)
    psf = gaussian_psf(2.0, 10)
    pulls, pulls_small = [], []
    for _ in range(200):
        x, y = 30 + rng.uniform(-0.5, 0.5), 31 + rng.uniform(-0.5, 0.5)
        img = render((64, 64), [x], [y], [1000.0], 2.0, 10)
        var = np.full(img.shape, 25.0)
        img = img + rng.normal(size=img.shape) * 5
        for h, out in ((10, pulls), (3, pulls_small)):
            ph = dia.forced_photometry(img, var, psf, x, y, stamp_half_width=h)
            out.append((ph.flux - 1000.0) / ph.flux_err)
    for p in (np.array(pulls), np.array(pulls_small)):
        assert abs(p.mean()) < 0.25
        assert abs(p.std() - 1) < 0.12


def test_bad_pixels_saturation_and_masks_do_not_bias() -> None:
    """NaN pixels, a masked block and a saturated (clipped, masked) star leave the kernel sum
    and the null statistics intact, and only their footprints become NaN."""
    scene = make_scene(np.random.default_rng(21), SHAPE, ratio=1.25, flux_range=(2e3, 5e4))
    clean = _subtract(scene)
    sci, tmpl = scene.science.copy(), scene.template.copy()
    rng = np.random.default_rng(5)
    nan_s = rng.integers(0, SHAPE[0], (4, 2))
    nan_t = rng.integers(0, SHAPE[0], (4, 2))
    sci[nan_s[:, 0], nan_s[:, 1]] = np.nan
    tmpl[nan_t[:, 0], nan_t[:, 1]] = np.nan
    mask = np.zeros(SHAPE, dtype=bool)
    mask[110:120, 20:40] = True
    # a bright star in both images, clipped where it saturates (and masked there)
    sci = sci + render(SHAPE, [80.2], [60.7], [5e6 * 1.25], 1.6, 7)
    tmpl = tmpl + render(SHAPE, [80.2], [60.7], [5e6], 1.1, 7)
    level = 2e4
    saturated = (sci > level) | (tmpl > level)
    sci[sci > level] = level
    tmpl[tmpl > level] = level
    mask |= saturated
    sub = dia.subtract(
        sci,
        tmpl,
        mask=mask,
        science_psf=scene.science_psf,
        template_psf=scene.template_psf,
        science_var=scene.science_var,
        template_var=scene.template_var,
        kernel_half_width=W,
        kernel_poly_order=DK,
        backend="cpu",
    )
    # both within the statistical precision of this scene (~2e-3) of the true ratio
    assert abs(clean.kernel_sum / 1.25 - 1) < 4e-3
    assert abs(sub.kernel_sum / 1.25 - 1) < 4e-3
    # where both are valid (and away from the added star), the difference image matches the
    # clean subtraction well within the noise
    both = np.isfinite(sub.difference) & np.isfinite(clean.difference)
    both[40:82, 60:102] = False
    change = (sub.difference - clean.difference)[both] / np.sqrt(clean.variance[both])
    assert np.sqrt(np.mean(change**2)) < 0.15
    assert abs(change.mean()) < 0.03
    assert np.isnan(sub.difference[mask]).all()
    assert np.isfinite(sub.difference).mean() > 0.4


def test_missing_psf_still_subtracts() -> None:
    """Without a template PSF the images are fitted directly (no cross-convolution) and the
    result is still clean; without a science PSF the decorrelated PSF is None."""
    scene = make_scene(np.random.default_rng(8), SHAPE, ratio=0.9)
    sub = _subtract(scene, template_psf=None)
    assert not sub.cross_convolved
    assert abs(sub.kernel_sum / 0.9 - 1) < 0.01
    dec = sub.decorrelate()
    assert dec.psf is not None
    assert dec.psf.sum() == pytest.approx(1, abs=1e-6)
    z = _z(dec.image, dec.variance)
    assert abs(z.std() - 1) < 0.05
    assert _subtract(scene, science_psf=None).decorrelate().psf is None


def test_ivar_weights_give_the_same_ratio() -> None:
    """Inverse-variance weighting keeps the kernel sum and clean residuals."""
    scene = make_scene(np.random.default_rng(12), SHAPE, ratio=1.1, flux_range=(2e3, 5e4))
    a = _subtract(scene)
    b = _subtract(scene, weights="ivar")
    assert abs(b.kernel_sum / a.kernel_sum - 1) < 3e-3
    assert abs(_z(b.difference, b.variance).std() - 1) < 0.05


@pytest.mark.parametrize(
    ("x", "y", "half"), [(80.0, 75.0, 20), (30.0, 145.0, 25), (40.0, 40.0, 400)]
)
def test_local_decorrelation_equals_the_whole_image_there(x: float, y: float, half: int) -> None:
    """decorrelate(x, y, half) computes only the box around (x, y), clipped at the edges, and
    gives there the same pixels (NaNs included) as decorrelating the whole image."""
    scene = make_scene(np.random.default_rng(5), SHAPE, ratio=1.05)
    mask = np.zeros(SHAPE, dtype=bool)
    mask[70:73, 90] = True  # a bad-pixel footprint inside the first box
    sub = _subtract(scene, mask=mask)
    whole = sub.decorrelate(x, y)
    local = sub.decorrelate(x, y, half=half)
    r0, c0 = local.origin
    cy, cx = int(np.floor(y + 0.5)), int(np.floor(x + 0.5))
    assert (r0, c0) == (max(0, cy - half), max(0, cx - half))
    rows = slice(r0, min(SHAPE[0], cy + half + 1))
    cols = slice(c0, min(SHAPE[1], cx + half + 1))
    assert local.image.shape == whole.image[rows, cols].shape
    for part, full in ((local.image, whole.image), (local.variance, whole.variance)):
        ref = full[rows, cols]
        assert np.array_equal(np.isnan(part), np.isnan(ref))
        ok = ~np.isnan(ref)
        assert np.max(np.abs(part[ok] - ref[ok])) <= 1e-9 * np.max(np.abs(ref[ok]))
    assert sub.decorrelate(x, y, half=half) is local  # cached per (x, y, half)


def test_clipping_keeps_unsubtractable_cores_out_of_the_kernel() -> None:
    """Residual cores no kernel can subtract (here: spikes added to the science image's stars,
    like cores after resampling an undersampled image) bias the kernel sum and inflate the fit
    chi2; with clip_sigma they are left out and the ratio is right again."""
    scene = make_scene(np.random.default_rng(21), SHAPE, ratio=1.1, n_stars=40)
    science = scene.science.copy()
    rng = np.random.default_rng(3)
    for _ in range(25):  # sharp positive and negative residual cores on bright pixels
        r, c = rng.integers(20, SHAPE[0] - 20, size=2)
        science[r, c] += rng.choice([-1, 1]) * 60 * np.sqrt(scene.science_var[r, c])
    plain = _subtract(scene, science_var=scene.science_var)
    spiked = _subtract(scene, science=science)
    clipped = _subtract(scene, science=science, clip_sigma=5.0)
    assert spiked.stats.chi2_dof > 3 * plain.stats.chi2_dof
    assert clipped.stats.n_clipped_pixels >= 25 * 9 * 0.8
    assert clipped.stats.chi2_dof < 1.3
    assert abs(clipped.kernel_sum / plain.kernel_sum - 1) < 2e-3
    assert clipped.stats.n_fit_pixels == plain.stats.n_fit_pixels - clipped.stats.n_clipped_pixels
