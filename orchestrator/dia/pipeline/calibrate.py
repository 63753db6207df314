"""Fluxes on a common zero point: nanojansky, from each image's AB zero point.

A row's ``flux`` is in the science image's own units (its counts), and ``zpt`` is that image's
AB zero point: ``m_AB = zpt - 2.5 log10(flux)``. Fluxes of different images (throughput, gain,
exposure time) only compare after a common zero point, so every row also gets

    flux_njy = flux * 10**(-0.4 * (zpt - 31.4)),   flux_njy_err likewise,

i.e. the flux density in nJy. 31.4 is the AB magnitude of 1 nJy (m_AB = -2.5 log10(f / 3631 Jy)
gives 8.90 for 1 Jy and 22.5 more for 1e-9 Jy; exactly 31.40006, a 6e-5 mag difference). nJy is
chosen because it is linear (zero and negative fluxes of a difference image stay meaningful,
unlike magnitudes), it is the unit of the Rubin/LSST catalogues Roman light curves will be
combined with, and the Roman SN PIT's snappl (``snappl.image``, 0.48.0) names 31.4 as the nJy zero
point. snappl's light-curve schema itself has no calibrated-flux column (flux and zpt only), so
there is no other convention to follow.
"""

from __future__ import annotations

import math

AB_MAG_OF_1_NJY = 31.4


def njy_per_count(zpt: float) -> float:
    """nJy per unit of image flux for an image of AB zero point ``zpt`` (NaN when unknown)."""
    try:
        zpt = float(zpt)
    except (TypeError, ValueError):
        return math.nan
    return 10.0 ** (-0.4 * (zpt - AB_MAG_OF_1_NJY)) if math.isfinite(zpt) else math.nan


def calibrated_flux(flux: float, flux_err: float, zpt: float) -> tuple[float, float]:
    """``(flux_njy, flux_njy_err)`` of a flux and its error in the image's units."""
    scale = njy_per_count(zpt)
    return float(flux) * scale, float(flux_err) * scale
