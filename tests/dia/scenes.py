"""Synthetic science/template pairs with known truth for the DIA tests and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import erf


def gaussian_psf(sigma: float, half: int, dy: float = 0.0, dx: float = 0.0) -> np.ndarray:
    """Pixel-integrated circular Gaussian at ``(dy, dx)`` on a ``2 half + 1`` stamp, sum 1."""
    edges = np.arange(-half, half + 2) - 0.5
    s2 = np.sqrt(2.0) * sigma
    py = np.diff(erf((edges - dy) / s2)) / 2
    px = np.diff(erf((edges - dx) / s2)) / 2
    psf = np.outer(py, px)
    return psf / psf.sum()


def render(shape: tuple[int, int], xs, ys, fluxes, sigma: float, half: int) -> np.ndarray:
    """Sum of pixel-integrated Gaussians (x = column) on an image of ``shape``."""
    img = np.zeros((shape[0] + 2 * half, shape[1] + 2 * half))
    for x, y, f in zip(xs, ys, fluxes, strict=True):
        ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        stamp = gaussian_psf(sigma, half, y - iy, x - ix)
        img[iy : iy + 2 * half + 1, ix : ix + 2 * half + 1] += f * stamp
    return img[half:-half, half:-half]


@dataclass
class Scene:
    science: np.ndarray
    template: np.ndarray
    science_var: np.ndarray
    template_var: np.ndarray
    science_psf: np.ndarray
    template_psf: np.ndarray
    ratio: float
    transient_xy: tuple[float, float] | None
    transient_flux: float
    star_xy: np.ndarray
    star_flux: np.ndarray


def make_scene(
    rng: np.random.Generator,
    shape: tuple[int, int] = (96, 96),
    *,
    n_stars: int = 30,
    sigma_science: float = 1.6,
    sigma_template: float = 1.1,
    ratio: float = 1.0,
    sky_science: float = 100.0,
    sky_template: float = 25.0,
    template_depth: float = 4.0,
    transient_flux: float = 0.0,
    transient_xy: tuple[float, float] | None = None,
    science_offset: tuple[float, float] = (0.0, 0.0),
    psf_half: int = 7,
    flux_range: tuple[float, float] = (500.0, 50000.0),
    star_seed: int | None = None,
) -> Scene:
    """A star field seen twice: the template deeper (less noise per flux), the science with
    flux ratio ``ratio``, a broader PSF, an optional sub-pixel shift and an optional transient.

    Noise is Gaussian with the exact per-pixel variance (sky + source) in both images.
    """
    srng = rng if star_seed is None else np.random.default_rng(star_seed)
    margin = 4
    xs = srng.uniform(margin, shape[1] - 1 - margin, n_stars)
    ys = srng.uniform(margin, shape[0] - 1 - margin, n_stars)
    lo, hi = np.log(flux_range[0]), np.log(flux_range[1])
    fl = np.exp(srng.uniform(lo, hi, n_stars))
    tmpl_model = render(shape, xs, ys, fl * template_depth, sigma_template, psf_half) + sky_template
    sci_model = (
        render(
            shape,
            xs + science_offset[1],
            ys + science_offset[0],
            fl * ratio,
            sigma_science,
            psf_half,
        )
        + sky_science
    )
    if transient_xy is not None and transient_flux != 0:
        sci_model += render(
            shape, [transient_xy[0]], [transient_xy[1]], [transient_flux], sigma_science, psf_half
        )
    var_t = np.maximum(tmpl_model, 1e-3)
    var_s = np.maximum(sci_model, 1e-3)
    template = tmpl_model + rng.normal(size=shape) * np.sqrt(var_t) - sky_template
    science = sci_model + rng.normal(size=shape) * np.sqrt(var_s)
    # template in the science's flux units / template_depth: scale so the true ratio is `ratio`
    template /= template_depth
    var_t = var_t / template_depth**2
    return Scene(
        science=science,
        template=template,
        science_var=var_s,
        template_var=var_t,
        science_psf=gaussian_psf(sigma_science, psf_half),
        template_psf=gaussian_psf(sigma_template, psf_half),
        ratio=ratio,
        transient_xy=transient_xy,
        transient_flux=transient_flux,
        star_xy=np.stack([xs, ys], 1),
        star_flux=fl,
    )
