"""Reading FITS exposures: where the pixels, errors, flags, WCS and zero point are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from orchestrator.dia.io import FitsImage, ImageReadError
from orchestrator.dia.simulate import make_wcs


def _pixels(n: int = 32) -> np.ndarray:
    return np.arange(n * n, dtype=np.float32).reshape(n, n)


def _header(**extra: object) -> fits.Header:
    hdr = make_wcs((10.0, -40.0), 0.0, 32).to_header()
    for k, v in extra.items():
        hdr[k] = v
    return hdr


def test_primary_hdu_pixels_without_error_map(tmp_path: Path) -> None:
    """Pixels in the primary HDU are read; no ERR/VAR means no variance; MAGZP is a zero point."""
    path = tmp_path / "p.fits"
    fits.PrimaryHDU(_pixels(), header=_header(MAGZP=25.5)).writeto(path)
    with FitsImage(path) as img:
        cut = img.read(slice(2, 10), slice(3, 7))
    assert cut.data.shape == (8, 4)
    assert cut.data[0, 0] == 2 * 32 + 3
    assert cut.variance is None
    assert not cut.mask.any()
    assert cut.zeropoint == 25.5
    assert cut.origin == (2, 3)


def test_sci_extension_with_err_and_dq(tmp_path: Path) -> None:
    """SCI holds the pixels, ERR squared is the variance, non-zero DQ (uint32) marks bad pixels."""
    path = tmp_path / "s.fits"
    dq = np.zeros((32, 32), dtype=np.uint32)
    dq[5, 6] = 4
    fits.HDUList(
        [
            fits.PrimaryHDU(header=fits.Header({"ZPTMAG": 26.1})),
            fits.ImageHDU(_pixels(), header=_header(), name="SCI"),
            fits.ImageHDU(np.full((32, 32), 3.0, np.float32), name="ERR"),
            fits.ImageHDU(dq, name="DQ"),
        ]
    ).writeto(path)
    with FitsImage(path) as img:
        cut = img.read()
        x, y = img.world_to_pixel(10.0, -40.0)
    assert cut.data[1, 0] == 32
    assert np.all(cut.variance == 9.0)
    assert cut.mask[5, 6]
    assert cut.mask.sum() == 1
    assert cut.zeropoint == pytest.approx(26.1)
    assert (x, y) == pytest.approx((15.5, 15.5))


def test_var_extension_and_nonpositive_variance_is_bad(tmp_path: Path) -> None:
    """A VAR extension is the variance itself; pixels with variance <= 0 or NaN data are bad."""
    path = tmp_path / "v.fits"
    data = _pixels()
    data[0, 0] = np.nan
    var = np.full((32, 32), 2.0, np.float32)
    var[1, 1] = 0.0
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(data, header=_header(ZPTMAG=24.0), name="SCI"),
            fits.ImageHDU(var, name="VAR"),
        ]
    ).writeto(path)
    with FitsImage(path) as img:
        cut = img.read()
    assert cut.variance is not None
    assert cut.variance[2, 2] == 2.0
    assert cut.mask[0, 0]
    assert cut.mask[1, 1]
    assert cut.mask.sum() == 2


def test_custom_zeropoint_key_and_missing_wcs(tmp_path: Path) -> None:
    """--zeropoint-key picks the keyword; an image without a celestial WCS is refused by name."""
    path = tmp_path / "z.fits"
    fits.PrimaryHDU(_pixels(), header=_header(MYZP=23.0, ZPTMAG=1.0)).writeto(path)
    with FitsImage(path, zeropoint_key="MYZP") as img:
        assert img.zeropoint == 23.0
    bare = tmp_path / "bare.fits"
    fits.PrimaryHDU(_pixels()).writeto(bare)
    with pytest.raises(ImageReadError, match="no celestial WCS"):
        FitsImage(bare)
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"not a fits file" * 100)
    with pytest.raises(ImageReadError, match=r"junk\.fits"):
        FitsImage(junk)
