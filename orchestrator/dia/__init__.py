"""Difference-image analysis (DIA): image subtraction and forced photometry.

The numerical core of the Roman supernova photometry job kind. The daemon never imports this
package; it runs in the job's child processes (numba compilation, large arrays).

* :func:`subtract` fits ``S ~ K(x, y) (x) T + B(x, y)`` (pixel delta basis of half-width ``w``,
  kernel polynomial order ``DK``, background order ``DB``, optional constant photometric ratio)
  by exact least squares over the good pixels, without wrap-around, and returns a
  :class:`Subtraction` (difference image, its variance, the kernel anywhere, decorrelation).
* :func:`forced_photometry` measures a PSF flux at a known position.

Defaults follow Roman practice (phrosty): w = 9, DK = 2, DB = 0, constant ratio, cross-convolution
of the science with the template PSF and the template with the science PSF first.
"""

from __future__ import annotations

from orchestrator.dia.backend import Backend, get_backend
from orchestrator.dia.errors import DiaBackendError, DiaError, DiaFitError, DiaInputError
from orchestrator.dia.photometry import Photometry, forced_photometry
from orchestrator.dia.result import Decorrelated, FitStats, Subtraction
from orchestrator.dia.subtraction import CLIP_ROUNDS, Prepared, prepare, subtract

__all__ = [
    "CLIP_ROUNDS",
    "Backend",
    "Decorrelated",
    "DiaBackendError",
    "DiaError",
    "DiaFitError",
    "DiaInputError",
    "FitStats",
    "Photometry",
    "Prepared",
    "Subtraction",
    "forced_photometry",
    "get_backend",
    "prepare",
    "subtract",
]
