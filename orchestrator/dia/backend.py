"""Choosing the compute backend (:mod:`orchestrator.dia.cpu` or :mod:`orchestrator.dia.gpu`),
and :class:`ComputeBackend`, the interface both modules implement (mypy checks each module
against it: ``test_backends`` asserts it at run time too).

Spectra are host arrays on the CPU and device arrays on the GPU (``Any`` here); everything
else goes in and comes out as host arrays.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

from orchestrator.dia.errors import DiaInputError

if TYPE_CHECKING:
    import numpy as np

Backend = Literal["auto", "cpu", "gpu"]


class ComputeBackend(Protocol):
    NAME: str

    def fft_shape(self, shape: tuple[int, int], margin: int) -> tuple[int, int]: ...

    def rfft(self, image: np.ndarray, fshape: tuple[int, int]) -> Any: ...

    def rfft_product(self, a: np.ndarray, b: np.ndarray | None, fshape: tuple[int, int]) -> Any: ...

    def kernel_spectrum(
        self, kernel: np.ndarray, fshape: tuple[int, int], dtype: type = ...
    ) -> Any: ...

    def lags(self, spec: Any, ref_spec: Any, max_lag: int) -> np.ndarray: ...

    def moment_spectra(
        self, image: np.ndarray, exps: np.ndarray, fshape: tuple[int, int]
    ) -> Iterator[tuple[int, Any]]: ...

    def convolve_spectra(
        self,
        specs: list[Any],
        kernels: Sequence[np.ndarray],
        fshape: tuple[int, int],
        shape: tuple[int, int],
    ) -> np.ndarray: ...

    def convolve(self, image: np.ndarray, kernels: np.ndarray) -> np.ndarray: ...

    def line_pair_moments(
        self, lines: np.ndarray, coords: np.ndarray, max_lag: int, n_mom: int
    ) -> np.ndarray: ...

    def strip_sums(
        self,
        moments: np.ndarray,
        row0: int,
        strip_lines: np.ndarray,
        strip_coords: np.ndarray,
        half_width: int,
        n_pow: int,
    ) -> np.ndarray: ...

    def assemble_kk(
        self,
        moments: np.ndarray,
        mom_index: np.ndarray,
        kexps: np.ndarray,
        alpha_y: float,
        alpha_x: float,
        half_width: int,
    ) -> np.ndarray: ...

    def assemble_strip(
        self,
        sums: np.ndarray,
        kexps: np.ndarray,
        alpha_line: float,
        half_width: int,
        horizontal: bool,
    ) -> np.ndarray: ...


def get_backend(name: str) -> ComputeBackend:
    """The backend module for ``name``; ``gpu`` without CuPy or a device raises (no fallback)."""
    from orchestrator.dia import cpu, gpu

    if name == "cpu":
        return cpu
    if name == "gpu":
        gpu.require()
        return gpu
    if name == "auto":
        return gpu if gpu.available() else cpu
    raise DiaInputError(f"backend must be 'auto', 'cpu' or 'gpu', got {name!r}")
