"""The plumbing of the sfft-romansnpit peer benchmark (benchmarks/sfft_peer.py), without sfft.

The peer itself (sfft-romansnpit's flow) runs only in the benchmark; these pin what its figures
rest on: how a subprocess's time and peak memory are measured, the fit mask's two fixes, how a
PSF file becomes the native-pixel stamp the flow is given, and the rows' shape for figures().
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import sfft_peer, sfft_peer_prep
from benchmarks.roman_quality import figures, line, noise, noise_line


def test_run_measured_reports_the_childs_peak_memory_and_exit_code() -> None:
    """A child that touches 300 MB reports a peak of at least that, and a small child a small
    one although the measuring process holds 600 MB; exit code and stderr come back."""
    ballast = np.ones(600 * 2**20 // 8)  # the parent's memory must not count for the child
    code = "import sys; b = bytearray(300 * 2**20); sys.stderr.write('done'); sys.exit(3)"
    res = sfft_peer.run_measured([sys.executable, "-c", code], timeout_s=60)
    assert res["rc"] == 3
    assert 300 <= res["peak_mb"] < 500
    assert res["tail"].endswith("done")
    small = sfft_peer.run_measured([sys.executable, "-c", "pass"], timeout_s=60)
    assert small["peak_mb"] < 100
    assert small["rc"] == 0
    assert ballast.sum() > 0


def test_run_measured_kills_a_child_past_its_timeout() -> None:
    """A child that outlives its timeout is killed with its process group, not waited for."""
    res = sfft_peer.run_measured([sys.executable, "-c", "import time; time.sleep(30)"], 0.5)
    assert res["rc"] == -9
    assert res["wall_s"] < 10


def test_fixed_fit_mask_drops_spoiled_sources_whole_and_the_objects_surroundings() -> None:
    """A source touching a bad pixel leaves the mask whole (and its neighbourhood), a clean
    source far from it and from the object stays, and the object's disc is out."""
    n = 200
    seg = np.zeros((n, n), dtype=np.int32)
    seg[20:40, 20:40] = 1  # a saturated star: one bad pixel in its core
    seg[150:170, 150:170] = 2  # a clean source
    seg[95:106, 95:106] = 3  # the host, around the object at (100, 100)
    detmask = seg > 0
    bad = np.zeros_like(detmask)
    bad[30, 30] = True
    fixed = sfft_peer_prep.fixed_fit_mask(detmask, seg, bad, x=100.0, y=100.0)
    assert not fixed[20:40, 20:40].any()  # the whole source, not only the bad pixel
    assert fixed[150:170, 150:170].all()
    assert not fixed[95:106, 95:106].any()
    # a clean source within BAD_GROW_PX of a spoiled one loses its pixels that near
    seg2 = seg.copy()
    seg2[45:60, 20:40] = 4
    fixed2 = sfft_peer_prep.fixed_fit_mask(seg2 > 0, seg2, bad, x=100.0, y=100.0)
    assert not fixed2[45, 30]
    assert fixed2[59, 30]


def _gaussian_file(path: Path, sigma_px: float, oversamp: int, pixconv: bool) -> None:
    from astropy.io import fits

    half = 10 * oversamp
    k = np.arange(-half, half + 1) / oversamp
    g = np.exp(-0.5 * (k / sigma_px) ** 2)
    img = np.outer(g, g)
    hdu = fits.PrimaryHDU(img / img.sum())
    hdu.header["OVERSAMP"] = oversamp
    hdu.header["PIXCONV"] = pixconv
    hdu.writeto(path)


@pytest.mark.parametrize("pixconv", [True, False])
def test_psf_from_file_puts_the_centre_at_the_sub_pixel_offset(
    tmp_path: Path, pixconv: bool
) -> None:
    """The stamp sums to 1, its centroid sits at (dx, dy) from the middle pixel, and an
    instrumental file is integrated over the pixel (variance + 1/12) while an effective one is
    only sampled."""
    sigma = 1.2
    path = tmp_path / "psf.fits"
    _gaussian_file(path, sigma, 4, pixconv)
    stamp = sfft_peer_prep.psf_from_file(path, 0.3, -0.2)
    assert stamp.shape == (21, 21)
    assert math.isclose(stamp.sum(), 1.0)
    k = np.arange(-10, 11)
    cx = float((stamp.sum(axis=0) * k).sum())
    cy = float((stamp.sum(axis=1) * k).sum())
    assert cx == pytest.approx(0.3, abs=0.01)
    assert cy == pytest.approx(-0.2, abs=0.01)
    var_x = float((stamp.sum(axis=0) * (k - cx) ** 2).sum())
    expected = sigma**2 + (0.0 if pixconv else 1 / 12)
    assert var_x == pytest.approx(expected, abs=0.02)


def test_peer_rows_go_through_figures_and_line() -> None:
    """Rows in the peer's shape (failed rows included) give the same figures as ours."""
    nan = float("nan")
    rows = [
        {"success": True, "flux": 1010.0, "err": 10.0, "true": 1000.0, "chi2": 1.1,
         "fit_chi2": 3.0, "ksum": 0.99, "error": ""},
        {"success": True, "flux": 5.0, "err": 10.0, "true": 0.0, "chi2": 0.9,
         "fit_chi2": 2.0, "ksum": 1.01, "error": ""},
        {"success": False, "flux": nan, "err": nan, "true": 500.0, "chi2": nan,
         "fit_chi2": nan, "ksum": nan, "error": "ImageReadError: x: cannot open as FITS"},
    ]  # fmt: skip
    fig = figures(rows)
    assert fig["n_ok"] == 2
    assert fig["n"] == 3
    assert fig["scale"] == pytest.approx(1.01)
    assert fig["null_pull"] == pytest.approx(0.5)
    text = line("all", "sfft estimated", fig, 12.5, 1300.4)
    assert "sfft estimated" in text
    assert text.rstrip().endswith("1300")


def test_noise_counts_each_science_image_once() -> None:
    """The statistical errors: the rows of one science image (one per template) count once,
    the bright median's error is 1.2533 sigma / sqrt(n), the null pull's 1 / sqrt(n)."""

    def row(sci: str, true: float, err: float) -> dict[str, object]:
        return {"success": True, "flux": true, "err": err, "true": true, "science_path": sci}

    rows = [row(f"s{i}", 10_000.0, 100.0) for i in range(4) for _ in range(2)]
    rows += [row(f"n{i}", 0.0, 50.0) for i in range(4) for _ in range(2)]
    nz = noise(rows)
    assert nz["n_eff"] == 8
    assert nz["bright_err"] == pytest.approx(1.2533 * 0.01 / 2)
    assert nz["null_pull"] == pytest.approx(0.5)
    # 8 rows of 4 images: the inverse-variance error 1 / sqrt(8 * 100^2) widened by sqrt(2)
    assert nz["scale"] == pytest.approx(np.sqrt(2) / np.sqrt(8 * 100**2))
    assert nz["pull_std"] == pytest.approx(1 / np.sqrt(14))
    assert "8 science images" in noise_line("files", nz)
