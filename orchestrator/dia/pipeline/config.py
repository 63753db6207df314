"""What a pair needs besides its two exposures (:class:`PipelineConfig`), and one prepared
exposure (:class:`Prepared`), shared by :mod:`.pair` (which prepares) and :mod:`.measure`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.dia.io import ExposureRow
from orchestrator.dia.pipeline.psf import PsfModel


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a pair needs besides its two exposures (hashable: it keys the caches)."""

    oid: str
    ra: float
    dec: float
    band: str
    outdir: Path
    backend: str = "auto"
    kernel_half_width: int = 9
    kernel_poly_order: int = 2
    background_poly_order: int = 0
    psf: str | None = None  # None: the list's psf column, else estimated; FILE or gaussian:FWHM
    # estimated PSFs' scale: "roman" (encircled-energy table), "stars" (curve of growth), "auto"
    psf_wings: str = "auto"
    cutout_px: int = 512  # science cutout side; 0 = whole image
    psf_half_px: int = 12  # PSF stamps are 2 h + 1 square
    psf_region_px: int = 1024  # side of the region searched for PSF stars
    background_box_px: int = 64
    zeropoint_key: str | None = None
    keep_products: bool = False
    # further objects on the same images, measured on the same subtraction of each pair:
    # (oid, ra, dec) each; the cutout then covers them all (``photometry run --also``)
    others: tuple[tuple[str, float, float], ...] = ()

    @property
    def objects(self) -> list[tuple[str, float, float]]:
        """Every object this config measures, itself first."""
        return [(self.oid, self.ra, self.dec), *self.others]


@dataclass
class Prepared:
    """One exposure's cutout around the object: sky-subtracted pixels, noise, mask, PSF."""

    row: ExposureRow
    data: np.ndarray
    variance: np.ndarray
    mask: np.ndarray
    wcs: Any
    origin: tuple[int, int]
    # the object's position in the cutout (0-based, x = column); with further objects
    # (``PipelineConfig.others``) the centre of their bounding box, which the cutout is around
    x: float
    y: float
    zeropoint: float
    psf: PsfModel
    notes: list[str] = field(default_factory=list)
