"""Choosing the compute backend (:mod:`orchestrator.dia.cpu` or :mod:`orchestrator.dia.gpu`)."""

from __future__ import annotations

from types import ModuleType
from typing import Literal

from orchestrator.dia.errors import DiaInputError

Backend = Literal["auto", "cpu", "gpu"]


def get_backend(name: str) -> ModuleType:
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
