"""The GalSim Roman scene generator (tests/dia/roman_scenes.py) makes what issue 9 requires.

The accuracy targets of issue 9 are not asserted here yet (the pipeline misses them today); the
baseline figures are in benchmarks/README.md (`benchmarks/roman_quality.py`).
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("galsim", reason="the Roman scenes need galsim (pip install galsim)")

from orchestrator.dia.io import FitsImage, ImageReadError, read_list
from tests.dia.roman_scenes import (
    DQ_DEAD,
    DQ_HOT,
    DQ_SATURATED,
    OVERSAMP,
    PSF_HALF_PX,
    RomanScene,
    effective_psf,
    make_scene,
)

SIZE = 512
SATURATION = 1.0e5


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> RomanScene:
    return make_scene(
        tmp_path_factory.mktemp("roman") / "scene",
        size=SIZE,
        n_templates=1,
        n_epochs=3,
        seed=7,
        saturation=SATURATION,
    )


def _readable(scene: RomanScene) -> list[Path]:
    rows = read_list(scene.out / "templates.txt") + read_list(scene.out / "science.txt")
    return [r.path for r in rows if r.path != scene.out / str(scene.unreadable)]


def test_star_count_and_flux_range(scene: RomanScene) -> None:
    """About 400 stars fall on a 512^2 image, with counts from 1e3 to 2e6 and saturating ones."""
    with FitsImage(scene.out / "images" / "template_00.fits") as img:
        x, y = img.wcs.all_world2pix(scene.star_ra, scene.star_dec, 0)
    inside = (x >= -0.5) & (x < SIZE - 0.5) & (y >= -0.5) & (y < SIZE - 0.5)
    assert 300 < inside.sum() < 500, inside.sum()
    assert scene.star_counts.min() >= 1e3
    assert scene.star_counts.max() <= 2e6
    assert (scene.star_counts > 5e5).sum() >= 3, "too few stars that saturate"
    assert (scene.star_counts < 3e3).sum() > inside.sum() / 10, "too few faint stars"


def test_images_have_err_dq_saturation_bad_column_and_hot_pixels(scene: RomanScene) -> None:
    """Every readable image has SCI, ERR and DQ; saturated, dead and hot pixels are flagged."""
    from astropy.io import fits

    for path in _readable(scene):
        with fits.open(path) as hdul:
            sci, err, dq = (hdul[name].data for name in ("SCI", "ERR", "DQ"))
            assert sci.shape == err.shape == dq.shape == (SIZE, SIZE)
            assert float(hdul[0].header["ZPTMAG"]) == 26.0
        assert np.all(err > 0)
        saturated = (dq & DQ_SATURATED) != 0
        assert saturated.sum() > 0, path
        assert np.all(sci[saturated] == SATURATION)
        assert np.all(sci[(dq == 0)] < SATURATION)
        dead_columns = np.unique(np.nonzero(dq & DQ_DEAD)[1])
        assert dead_columns.size == 1
        assert (dq[:, dead_columns[0]] != 0).sum() >= SIZE // 2
        assert ((dq & DQ_HOT) != 0).sum() >= 3
        # sky 60 counts, read noise 8.5: the clean background's median and ERR's floor
        assert 59 < float(np.median(sci[dq == 0])) < 66
        assert float(err.min()) == pytest.approx(math.sqrt(60 + 8.5**2), rel=1e-3)


def test_psf_files_are_4x_pixel_convolved_and_carry_unit_total_flux(scene: RomanScene) -> None:
    """PSF files: OVERSAMP 4, centred, sum 1 within 1e-3, every sub-pixel phase sums to 1/16.

    A pixel-convolved (effective) PSF's samples one pixel apart sum to the flux that falls in
    the pixels, whatever their phase; a PSF without the pixel convolution, undersampled as R062
    is, would alias (its phase sums differ by per cents).
    """
    from astropy.io import fits

    rows = read_list(scene.out / "templates.txt") + read_list(scene.out / "science.txt")
    for row in rows:
        assert row.psf_path is not None
        with fits.open(row.psf_path) as hdul:
            psf = np.asarray(hdul[0].data, dtype=float)
            assert hdul[0].header["OVERSAMP"] == OVERSAMP
            assert hdul[0].header["PIXCONV"] is True
        n = 2 * PSF_HALF_PX * OVERSAMP + 1
        assert psf.shape == (n, n)
        assert np.unravel_index(np.argmax(psf), psf.shape) == (n // 2, n // 2)
        assert abs(psf.sum() - 1) < 1e-3, psf.sum()
        phases = [psf[a::OVERSAMP, b::OVERSAMP].sum() for a in range(4) for b in range(4)]
        assert np.ptp(phases) * OVERSAMP**2 < 2e-3, phases


def test_exposures_differ_by_sca_dither_and_roll(scene: RomanScene) -> None:
    """Each exposure has its own SCA, a sub-pixel dither within 15 px and a roll within 1.5 deg."""
    assert len({e.sca for e in scene.exposures}) == len(scene.exposures)
    positions, rolls = [], []
    for path in _readable(scene):
        with FitsImage(path) as img:
            positions.append(img.world_to_pixel(scene.obj["ra"], scene.obj["dec"]))
            cd = img.wcs.pixel_scale_matrix
            rolls.append(math.degrees(math.atan2(cd[0, 1], -cd[0, 0])))
            assert img.wcs.wcs.ctype[0] == "RA---TAN"
    xy = np.array(positions)
    centre = (SIZE - 1) / 2
    assert np.all(np.abs(xy - centre) < 15 + 3 + 1e-6)  # dither + the object's own offset
    assert np.ptp(xy[:, 0] % 1) > 0.05
    assert np.ptp(xy[:, 1] % 1) > 0.05
    assert np.all(np.abs(rolls) <= 1.5)
    assert np.ptp(rolls) > 0.05


def test_unreadable_image_and_supernova_near_host(scene: RomanScene) -> None:
    """One science image cannot be read as FITS; the supernova sits 2-4 px from its host."""
    assert scene.unreadable is not None
    with pytest.raises(ImageReadError):
        FitsImage(scene.out / scene.unreadable)
    with (scene.out / "truth.csv").open() as fh:
        truth = list(csv.DictReader(fh))
    assert [t["readable"] for t in truth].count("False") == 1
    assert float(truth[0]["true_flux"]) == 0.0  # a null epoch before the explosion
    assert max(float(t["true_flux"]) for t in truth) > 5000
    cos_dec = math.cos(math.radians(scene.obj["dec"]))
    sep_px = (
        math.hypot(
            (scene.obj["ra"] - scene.obj["host_ra"]) * cos_dec,
            scene.obj["dec"] - scene.obj["host_dec"],
        )
        * 3600
        / 0.11
    )
    assert 2.0 <= sep_px <= 4.0, sep_px


def test_bright_stars_get_full_wing_stamps(scene: RomanScene) -> None:
    """A 2e6-count star is drawn out to where the PSF ends, a 1e3-count one on a small stamp."""
    eff = effective_psf(scene.exposures[0].sca, "R062", 2048, 2048)  # cached by the scene
    assert eff.radius_for(2e6) == PSF_HALF_PX
    assert eff.radius_for(1e3) < 32
    stamp, _, _ = eff.stamp(10.3, 20.6, PSF_HALF_PX)
    assert stamp.sum() == pytest.approx(1.0, abs=1e-3)


@pytest.mark.slow
def test_pipeline_runs_on_a_roman_scene(tmp_path: Path) -> None:
    """`photometry run` on a small Roman scene: a row per pair, only the unreadable one fails."""
    scene = make_scene(tmp_path / "scene", size=256, n_templates=1, n_epochs=3, seed=3)
    obj = scene.out / "object.json"
    argv = [sys.executable, "-m", "orchestrator.dia.cli", "run", "--object", str(obj)]
    argv += ["-t", str(scene.out / "templates.txt"), "-s", str(scene.out / "science.txt")]
    argv += ["-o", str(tmp_path / "out")]
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 1, proc.stderr[-3000:]
    oid, band = scene.obj["oid"], scene.obj["band"]
    with (tmp_path / "out" / oid / f"{oid}_{band}_lightcurve.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3
    failed = [r for r in rows if r["success"] != "true"]
    assert len(failed) == 1
    assert Path(failed[0]["science_path"]).name == Path(str(scene.unreadable)).name
    assert all(math.isfinite(float(r["flux"])) for r in rows if r["success"] == "true")
