"""PSF files: pixel-convolved or instrumental (PIXCONV), their flux scale, sub-pixel rendering."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from scipy.special import erf

from orchestrator.dia.io import read_psf_image
from orchestrator.dia.pipeline.psf import PsfModel

SIGMA = 0.55  # px: undersampled, as Roman's R062 PSF is


def _pixel_gaussian(u: np.ndarray) -> np.ndarray:
    """Flux fraction of a unit Gaussian (SIGMA) in a detector pixel centred at offset ``u``."""
    s2 = math.sqrt(2) * SIGMA
    return (erf((u + 0.5) / s2) - erf((u - 0.5) / s2)) / 2


def _write(path: Path, data: np.ndarray, pixconv: bool | None, oversamp: int = 4) -> Path:
    hdu = fits.PrimaryHDU(data)
    hdu.header["OVERSAMP"] = oversamp
    if pixconv is not None:
        hdu.header["PIXCONV"] = pixconv
    hdu.writeto(path)
    return path


def _effective_samples(half: int = 12, oversamp: int = 4) -> np.ndarray:
    """Samples of the pixel-convolved PSF on an ``oversamp`` grid, unit total flux (sum ~1)."""
    u = np.arange(-half * oversamp, half * oversamp + 1) / oversamp
    one = _pixel_gaussian(u)
    return np.outer(one, one) / oversamp**2


def test_pixel_convolved_file_is_not_integrated_over_the_pixel_again(tmp_path: Path) -> None:
    """A PIXCONV = T file renders exact pixel fluxes; read as instrumental it would be broader."""
    data = _effective_samples()
    model = PsfModel.from_file(read_psf_image(_write(tmp_path / "eff.fits", data, True)))
    twice = PsfModel.from_file(read_psf_image(_write(tmp_path / "ins.fits", data, False)))
    for dx, dy in ((0.0, 0.0), (0.37, -0.21), (0.5, 0.5)):
        off = np.arange(-8, 9)
        truth = np.outer(_pixel_gaussian(off - dy), _pixel_gaussian(off - dx))
        assert np.abs(model.stamp(8, dx, dy) - truth).max() < 2e-3 * truth.max()
        assert model.stamp(8, dx, dy).sum() == pytest.approx(1.0, abs=2e-3)
        # integrating an effective PSF over the pixel again lowers the peak by several per cent
        assert twice.stamp(8, dx, dy).max() < 0.95 * truth.max()


def test_without_pixconv_a_file_is_taken_as_pixel_convolved(tmp_path: Path) -> None:
    data = _effective_samples()
    image = read_psf_image(_write(tmp_path / "p.fits", data, None))
    assert image.pixel_convolved
    assert image.oversamp == 4


def test_scale_is_kept_and_only_an_odd_scale_is_renormalised(tmp_path: Path) -> None:
    """Unit total flux (sum = encircled energy) is kept; x oversamp^2 is undone; others -> 1."""
    data = _effective_samples() * 0.97  # a stamp that holds 97 % of the flux
    kept = read_psf_image(_write(tmp_path / "a.fits", data, True))
    assert kept.data.sum() == pytest.approx(0.97, rel=1e-6)
    assert kept.note == ""
    per_pixel = read_psf_image(_write(tmp_path / "b.fits", data * 16, True))
    assert per_pixel.data.sum() == pytest.approx(0.97, rel=1e-6)
    assert per_pixel.note == ""
    odd = read_psf_image(_write(tmp_path / "c.fits", data * 5, True))
    assert odd.data.sum() == pytest.approx(1.0)
    assert "normalised to 1" in odd.note
    assert PsfModel.from_file(kept).stamp(12).sum() == pytest.approx(0.97, abs=2e-3)


def test_bad_pixconv_value_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.fits"
    hdu = fits.PrimaryHDU(_effective_samples())
    hdu.header["OVERSAMP"] = 4
    hdu.header["PIXCONV"] = "maybe"
    hdu.writeto(path)
    from orchestrator.dia.io import ImageReadError

    with pytest.raises(ImageReadError, match=r"bad\.fits.*PIXCONV"):
        read_psf_image(path)


def test_fourier_rendering_matches_the_exact_profile_at_any_phase() -> None:
    """Sub-pixel stamps of a band-limited effective PSF agree with the exact pixel fluxes."""
    model = PsfModel.from_effective(_effective_samples(16), 4)
    rng = np.random.default_rng(4)
    off = np.arange(-10, 11)
    for dx, dy in rng.uniform(-0.5, 0.5, (6, 2)):
        truth = np.outer(_pixel_gaussian(off - dy), _pixel_gaussian(off - dx))
        stamp = model.stamp(10, dx, dy)
        # flux measured with the rendered PSF: within 0.3 % at every phase
        assert (stamp * truth).sum() / (stamp * stamp).sum() == pytest.approx(1.0, abs=3e-3)
