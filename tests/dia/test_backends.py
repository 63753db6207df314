"""Backend selection: CPU always, GPU only when asked and present, never a silent fallback."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator import dia
from orchestrator.dia import gpu
from tests.dia import cupy_standin
from tests.dia.scenes import make_scene


def test_gpu_without_cupy_or_device_is_a_clear_error() -> None:
    """backend='gpu' where CuPy or a device is missing raises DiaBackendError, not a fallback."""
    if gpu.available():
        pytest.skip("a GPU is present here; the error path cannot be exercised")
    rng = np.random.default_rng(0)
    img = rng.normal(size=(40, 40))
    with pytest.raises(dia.DiaBackendError, match="gpu"):
        dia.subtract(img, img, kernel_half_width=2, kernel_poly_order=0, backend="gpu")


def test_auto_picks_cpu_without_gpu_and_unknown_names_fail() -> None:
    """backend='auto' reports the backend it used; an unknown backend name is an input error."""
    rng = np.random.default_rng(0)
    t = rng.normal(size=(40, 40)) + 1
    sub = dia.subtract(t + rng.normal(size=t.shape), t, kernel_half_width=2, kernel_poly_order=0)
    assert sub.backend == ("gpu" if gpu.available() else "cpu")
    with pytest.raises(dia.DiaInputError):
        dia.get_backend("tpu")


def _assert_backends_agree() -> None:
    """The GPU backend's fit agrees with the CPU's where it is determined, far inside the noise.

    Single coefficients are not determined: 482 unknowns on a 160^2 scene make an
    ill-conditioned system, and the variances are convolved in single precision, so roundoff in
    the last bits (cuFFT against pocketfft) moved single coefficients by 1e-3 (NumPy standing
    in) and 1e-2 (an H200, 2026-11-29), and chi2/dof by 4e-4 relative on the H200
    (0.90635 against 0.90674; its statistical scatter is 0.01). What a user measures is held
    to a twentieth of a standard deviation per pixel or better: the difference image (NumPy
    standing in: 4e-5 sigma), the decorrelated image (3e-4 sigma) and the kernel sum, the
    photometric scale (2e-8 relative; held to 1e-4).
    """
    scene = make_scene(np.random.default_rng(1), (160, 160), ratio=1.1)
    kw = dict(
        science_psf=scene.science_psf,
        template_psf=scene.template_psf,
        science_var=scene.science_var,
        template_var=scene.template_var,
        kernel_half_width=4,
        kernel_poly_order=2,
    )
    a = dia.subtract(scene.science, scene.template, backend="cpu", **kw)
    b = dia.subtract(scene.science, scene.template, backend="gpu", **kw)
    assert (a.backend, b.backend) == ("cpu", "gpu")
    assert b.stats.chi2_dof == pytest.approx(a.stats.chi2_dof, rel=2e-3)
    for x, y in ((80.0, 80.0), (20.0, 140.0)):
        assert b.kernel_sum_at(x, y) == pytest.approx(a.kernel_sum_at(x, y), rel=1e-4)
    ok = np.isfinite(a.difference)
    assert np.array_equal(ok, np.isfinite(b.difference))
    sigma = np.sqrt(a.variance[ok])
    assert np.max(np.abs(a.difference[ok] - b.difference[ok]) / sigma) <= 0.05
    da, db = a.decorrelate(), b.decorrelate()
    ok = np.isfinite(da.image)
    assert np.max(np.abs(da.image[ok] - db.image[ok]) / np.sqrt(da.variance[ok])) <= 0.05


@pytest.mark.gpu
def test_gpu_matches_cpu() -> None:
    """On a GPU the model, difference and decorrelated image agree with the CPU's."""
    if not gpu.available():
        pytest.skip("needs CuPy with a CUDA device (gpu marker)")
    _assert_backends_agree()


def test_gpu_backend_code_matches_cpu_with_numpy_standing_in() -> None:
    """The GPU module's own code (its transforms, lags, kernel spectra, convolution) runs on every
    machine with NumPy standing in for CuPy (tests/dia/cupy_standin.py, a fake for the device
    that CI lacks) and agrees with the CPU backend as on a real GPU."""
    with cupy_standin.installed():
        assert gpu.available()
        _assert_backends_agree()


def test_input_validation_names_the_field() -> None:
    """Shape mismatches and bad PSFs raise DiaInputError naming the argument."""
    img = np.zeros((40, 40))
    with pytest.raises(dia.DiaInputError, match="template"):
        dia.subtract(img, np.zeros((40, 41)), backend="cpu")
    with pytest.raises(dia.DiaInputError, match="science_psf"):
        dia.subtract(img, img, science_psf=np.ones((4, 4)), backend="cpu")
    with pytest.raises(dia.DiaFitError):
        dia.subtract(img[:20, :20], img[:20, :20], backend="cpu")


def test_both_backends_implement_the_interface() -> None:
    """Every member of ComputeBackend exists in the CPU and the GPU module with the same
    parameters (mypy checks the types; this catches a twin that drifted at run time)."""
    import inspect

    from orchestrator.dia import cpu, gpu
    from orchestrator.dia.backend import ComputeBackend

    members = [m for m in vars(ComputeBackend) if not m.startswith("_")]
    assert "convolve_spectra" in members
    assert "lags" in members
    for name in members:
        if name == "NAME":
            assert {cpu.NAME, gpu.NAME} == {"cpu", "gpu"}
            continue
        want = list(inspect.signature(getattr(ComputeBackend, name)).parameters)[1:]
        for module in (cpu, gpu):
            have = list(inspect.signature(getattr(module, name)).parameters)
            assert have == want, f"{module.__name__}.{name}{have} != {want}"
