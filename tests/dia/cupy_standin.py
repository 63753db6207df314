"""NumPy standing in for CuPy, so that the GPU backend's own code runs where no GPU exists.

A fake, for what cannot exist on the CI machines (a CUDA device): the module answers every
attribute CuPy's array API shares with NumPy (``asarray``, ``fft.rfft2``, ``conj``, ...) with
NumPy's, plus ``asnumpy`` and ``cuda.runtime.getDeviceCount`` (one device). It is faithful in
what :mod:`orchestrator.dia.gpu` relies on: the same names, shapes and dtypes (float32 in,
complex64 out), not in roundoff (cuFFT and pocketfft differ in the last bits, which is why the
comparisons allow for an ill-conditioned fit). The real device runs the same tests through
``benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np


class _Standin(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


def module() -> types.ModuleType:
    """A fresh ``cupy`` stand-in."""
    cp = _Standin("cupy")
    cp.asnumpy = np.asarray  # type: ignore[attr-defined]
    cp.cuda = types.SimpleNamespace(  # type: ignore[attr-defined]
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1)
    )
    return cp


@contextmanager
def installed() -> Iterator[types.ModuleType]:
    """``import cupy`` yields the stand-in inside the block; the previous state comes back."""
    before = sys.modules.get("cupy")
    cp = module()
    sys.modules["cupy"] = cp
    try:
        yield cp
    finally:
        if before is None:
            sys.modules.pop("cupy", None)
        else:
            sys.modules["cupy"] = before
