"""The flux error that estimated PSFs add (``measure.psf_error`` from ``PsfModel.halves``)."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.dia.pipeline.measure import ERROR_PHASES, psf_error
from orchestrator.dia.pipeline.psf import PsfModel
from orchestrator.dia.pipeline.psf_stars import estimate_psf
from orchestrator.dia.simulate import _add_source, psf_image

DELTA = np.ones((1, 1))  # no decorrelation filter


def _with_halves(model: PsfModel, one: PsfModel, two: PsfModel) -> PsfModel:
    return PsfModel(model.grid, model.oversamp, origin_known=False, halves=(one, two))


def test_psf_files_add_no_error() -> None:
    model = PsfModel.from_instrumental(psf_image(0.6), 4)
    assert psf_error(model, model.stamp(8), DELTA, 10) == 0.0


def test_error_is_half_the_halves_difference_in_flux() -> None:
    """Halves 2 % apart in scale give 1 % (the mean's error); a shift between them costs nothing
    (the position refit takes it), identical halves nothing."""
    base = PsfModel.from_instrumental(psf_image(0.6), 4)
    scaled = PsfModel(base.grid * 1.02, 4)
    tmpl = PsfModel.from_instrumental(psf_image(0.7), 4).stamp(8)
    assert psf_error(_with_halves(base, base, base), tmpl, DELTA, 10) < 1e-12
    err = psf_error(_with_halves(base, scaled, base), tmpl, DELTA, 10)
    assert err == pytest.approx(0.02 / 1.02 / 2, rel=0.02)
    from scipy import ndimage

    moved = PsfModel(ndimage.shift(base.grid, (0.2, -0.1), order=3), 4)  # 0.05 px, 0.025 px
    assert psf_error(_with_halves(base, moved, base), tmpl, DELTA, 10) < 0.002
    # a wider half moves the flux (a shape error, not a scale error)
    wider = PsfModel.from_instrumental(psf_image(0.66), 4)
    assert psf_error(_with_halves(base, base, wider), tmpl, DELTA, 10) > 0.005


def _field(seed: int, noise_scale: float) -> tuple[np.ndarray, np.ndarray, PsfModel]:
    rng = np.random.default_rng(seed)
    n, core = 400, 0.55
    img = np.zeros((n, n))
    xs, ys = rng.uniform(15, n - 15, 80), rng.uniform(15, n - 15, 80)
    for x, y, f in zip(xs, ys, np.exp(rng.uniform(np.log(3e3), np.log(3e5), 80)), strict=True):
        _add_source(img, x, y, f, core)
    var = (img + 100.0) * noise_scale**2
    img += rng.normal(size=img.shape) * np.sqrt(var)
    return img, var, PsfModel.from_instrumental(psf_image(core), 4)


def test_estimated_psf_error_tracks_its_real_error() -> None:
    """From stars, the halves' error is the size of the model's real flux error over phases
    (within 3x: one image's estimate is itself noisy) and grows with the stars' noise."""
    errors = []
    for noise in (1.0, 4.0):
        img, var, true = _field(0, noise)
        est = estimate_psf(img, var, np.zeros(img.shape, bool), half=10)
        assert est.halves is not None
        predicted = psf_error(est, true.stamp(10), DELTA, 12)
        ratios = []
        for dx, dy in ERROR_PHASES:
            p, q = est.stamp(12, dx, dy), true.stamp(12, dx, dy)
            ratios.append((p * q).sum() / (p * p).sum())
        actual = float(np.sqrt(np.mean((np.asarray(ratios) - 1) ** 2)))
        assert actual / 3 < predicted < actual * 3, (noise, predicted, actual)
        errors.append(predicted)
    assert errors[1] > 1.5 * errors[0]


def test_few_stars_give_one_model_and_no_error() -> None:
    """Under twice the minimum number of stars there is nothing to split: no halves, no term."""
    rng = np.random.default_rng(1)
    img = np.zeros((200, 200))
    for x, y in rng.uniform(20, 180, (7, 2)):
        _add_source(img, x, y, 1e5, 0.55)
    var = img + 100.0
    img += rng.normal(size=img.shape) * np.sqrt(var)
    est = estimate_psf(img, var, np.zeros(img.shape, bool), half=8)
    assert est.halves is None
    assert psf_error(est, est.stamp(8), DELTA, 10) == 0.0
