"""Backend selection: CPU always, GPU only when asked and present, never a silent fallback."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator import dia
from orchestrator.dia import gpu
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


@pytest.mark.gpu
def test_gpu_matches_cpu() -> None:
    """On a GPU the solution, difference and decorrelated image agree with the CPU to 1e-6."""
    if not gpu.available():
        pytest.skip("needs CuPy with a CUDA device (gpu marker)")
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
    assert b.backend == "gpu"
    assert np.max(np.abs(a.coefficients - b.coefficients)) <= 1e-6 * np.max(np.abs(a.coefficients))
    ok = np.isfinite(a.difference)
    scale = np.max(np.abs(a.difference[ok]))
    assert np.max(np.abs(a.difference[ok] - b.difference[ok])) <= 1e-6 * scale
    da, db = a.decorrelate(), b.decorrelate()
    ok = np.isfinite(da.image)
    assert np.max(np.abs(da.image[ok] - db.image[ok])) <= 1e-6 * np.max(np.abs(da.image[ok]))


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
