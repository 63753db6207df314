"""Light-curve rows: outliers clipped in the photometry stamp's wings, flags with reasons."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from orchestrator import dia
from orchestrator.dia.pipeline import quality, roman_ee
from orchestrator.dia.pipeline.psf import PsfModel


def _scene(seed: int, neighbour: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    core, halo = PsfModel.gaussian(1.6, half_px=14), PsfModel.gaussian(7.0, half_px=14)
    psf = PsfModel(0.85 * core.grid + 0.15 * halo.grid, core.oversamp)  # a core with wings
    img = np.zeros((61, 61))
    img[18:43, 18:43] += 5000.0 * psf.stamp(12, 0.2, -0.1)
    # the residual of a bright neighbour left by the subtraction, 9 px away
    img[27:32, 35:40] += neighbour  # 5-9 px from the source
    var = np.full(img.shape, 100.0)
    img += rng.normal(size=img.shape) * 10.0
    return img, var, psf.stamp(12, 0.2, -0.1)  # rendered at the source (no re-shift)


def test_a_neighbours_residual_in_the_wings_is_clipped_and_the_flux_kept() -> None:
    biased, clipped = [], []
    for seed in range(20):
        img, var, p = _scene(seed, 1500.0)
        plain = dia.forced_photometry(img, var, p, 30.0, 30.0)
        robust = dia.forced_photometry(img, var, p, 30.0, 30.0, clip_sigma=5.0)
        assert robust.n_clipped >= 25
        assert 0 < robust.clipped_weight < 0.05
        biased.append((plain.flux - 5000.0) / plain.flux_err)
        clipped.append((robust.flux - 5000.0) / robust.flux_err)
        assert plain.chi2_dof > 2 * robust.chi2_dof
    assert np.mean(biased) > 2.0  # the neighbour pulls the unclipped flux up
    assert abs(np.mean(clipped)) < 0.5
    assert 0.6 < np.std(clipped) < 1.4


def test_clipping_leaves_clean_data_alone() -> None:
    pulls = []
    for seed in range(30):
        img, var, p = _scene(seed, 0.0)
        ph = dia.forced_photometry(img, var, p, 30.0, 30.0, clip_sigma=5.0)
        assert ph.n_clipped == 0
        pulls.append((ph.flux - 5000.0) / ph.flux_err)
    assert abs(np.mean(pulls)) < 0.5
    assert 0.7 < np.std(pulls) < 1.3


def test_the_core_is_never_clipped_a_misfit_there_shows_in_chi2() -> None:
    img, var, _ = _scene(1, 0.0)
    wrong = PsfModel.gaussian(0.8, half_px=14).stamp(12, 0.2, -0.1)  # far too narrow
    ph = dia.forced_photometry(img, var, wrong, 30.0, 30.0, clip_sigma=5.0)
    flag, why = quality.assess(
        chi2_dof=ph.chi2_dof,
        clipped_weight=ph.clipped_weight,
        masked_weight=0.0,
        kernel_sum=1.0,
        zpt_science=26.0,
        zpt_template=26.0,
    )
    assert ph.chi2_dof > quality.MAX_CHI2_DOF
    assert flag & quality.CHI2
    assert "chi2/dof" in why


@pytest.mark.parametrize(
    ("kwargs", "bit"),
    [
        ({"chi2_dof": 3.1}, quality.CHI2),
        ({"chi2_dof": float("nan")}, quality.CHI2),
        ({"clipped_weight": 0.2}, quality.CLIPPED),
        ({"masked_weight": 0.3}, quality.MASKED),
        ({"kernel_sum": 0.9}, quality.KERNEL),
        ({"kernel_sum": 1.0, "zpt_science": 26.1}, quality.KERNEL),  # zero points say 1.096
        ({"kernel_sum": 1.096, "zpt_science": 26.1}, 0),
    ],
)
def test_each_flag_has_its_bit_and_reason(kwargs: dict[str, float], bit: int) -> None:
    base = {
        "chi2_dof": 1.0,
        "clipped_weight": 0.0,
        "masked_weight": 0.0,
        "kernel_sum": 1.0,
        "zpt_science": 26.0,
        "zpt_template": 26.0,
    }
    flag, why = quality.assess(**{**base, **kwargs})
    assert flag == bit
    assert bool(why) == bool(bit)


def test_encircled_energy_table_is_ordered_by_radius_and_wavelength() -> None:
    for band, table in roman_ee.ENCIRCLED_ENERGY.items():
        values = [table[h] for h in sorted(table)]
        assert all(a < b < 1 for a, b in itertools.pairwise(values)), band
    # redder bands have broader PSFs: less flux in the same stamp
    assert roman_ee.ENCIRCLED_ENERGY["R062"][10] > roman_ee.ENCIRCLED_ENERGY["H158"][10]
    assert roman_ee.stamp_fraction("r062", 4) == roman_ee.ENCIRCLED_ENERGY["R062"][4]
    assert roman_ee.stamp_fraction("X999", 4) is None
    assert roman_ee.stamp_fraction("R062", 99) is None


def test_encircled_energy_table_agrees_with_galsim() -> None:
    """One entry recomputed from GalSim's Roman PSF (another detector) within 0.5 %."""
    pytest.importorskip("galsim")
    from tests.dia.roman_scenes import effective_psf_grid

    model = PsfModel(effective_psf_grid(3, "R062", 1000, 3000, 4, 40), 4)
    for h in (4, 10):
        assert model.enclosed(h) == pytest.approx(roman_ee.ENCIRCLED_ENERGY["R062"][h], abs=5e-3)
