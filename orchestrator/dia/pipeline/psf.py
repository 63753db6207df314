"""PSF models for the pipeline: given images, analytic Gaussians, or estimated from stars.

Every model is an *effective* PSF (Anderson & King 2000, PASP 112, 1360) on a grid oversampled by
``oversamp``: its value at an offset ``u`` (pixels) from a point source is the fraction of the
source's flux that falls in the pixel centred at ``u``. Rendering a stamp at any sub-pixel position
is then a matter of sampling it, which is what an undersampled PSF (Roman: FWHM 1-2 pixels) needs;
a phase shift of a pixel-sampled stamp would alias.

A PSF file is either already pixel-convolved (the Roman SN PIT's files: its samples times
``oversamp**2`` are the effective PSF) or instrumental (STPSF's oversampled extension, our
simulator: ``PIXCONV = F``), which becomes effective by integrating over the pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.special import erf

from orchestrator.dia.io import PsfImage


@dataclass(frozen=True)
class PsfModel:
    """An effective PSF sampled on an odd square grid, ``oversamp`` samples per pixel, centred."""

    grid: np.ndarray
    oversamp: int
    note: str = ""  # how it was made, when that is worth a row's note (estimated PSFs)
    origin_known: bool = True  # False: centred on its centroid, not on the WCS's reference
    # two independent estimates from disjoint halves of the stars (estimated PSFs; the model is
    # their mean): how much they differ measures the model's own error (see measure.psf_error)
    halves: tuple[PsfModel, PsfModel] | None = None

    @classmethod
    def from_instrumental(cls, psf: np.ndarray, oversamp: int) -> PsfModel:
        """From an instrumental PSF image (no pixel), centred, oversampled by ``oversamp``.

        The samples are flux fractions per fine bin (they sum to the stamp's encircled energy);
        the model keeps that scale.
        """
        psf = _centred_square(psf)
        # integrate over the detector pixel in Fourier space: the fine bins are already
        # integrals over 1/oversamp of a pixel, so multiply by sinc(N f) / sinc(f) per axis
        # (f in cycles per fine bin; exact for a band-limited PSF; a trapezoid of fine bins is
        # off by a few per cent at the peak of an undersampled PSF when oversamp is even)
        pad = 2 * oversamp
        grid = np.pad(psf, pad)
        spec = np.fft.rfft2(grid)
        fy = np.fft.fftfreq(grid.shape[0])[:, None]
        fx = np.fft.rfftfreq(grid.shape[1])[None, :]
        n = oversamp
        spec *= (n * np.sinc(n * fy) / np.sinc(fy)) * (n * np.sinc(n * fx) / np.sinc(fx))
        return cls(np.fft.irfft2(spec, s=grid.shape), int(oversamp))

    @classmethod
    def from_effective(cls, psf: np.ndarray, oversamp: int) -> PsfModel:
        """From samples of the pixel-convolved PSF on an ``oversamp`` grid (unit total flux).

        A sample is the flux in one fine bin's area, so the fraction of the flux in a whole
        detector pixel centred there is ``oversamp**2`` times it: no second pixel integration
        (integrating again broadened the core and biased fluxes by 4-18 % on issue 9's scenes).
        """
        return cls(_centred_square(psf) * oversamp**2, int(oversamp))

    @classmethod
    def from_file(cls, image: PsfImage) -> PsfModel:
        """From a PSF file as :func:`orchestrator.dia.io.read_psf_image` reads it."""
        if image.pixel_convolved:
            return cls.from_effective(image.data, image.oversamp)
        return cls.from_instrumental(image.data, image.oversamp)

    @classmethod
    def gaussian(cls, fwhm_px: float, oversamp: int = 5, half_px: int = 12) -> PsfModel:
        """A circular Gaussian of ``fwhm_px`` (before pixel integration), pixel-integrated."""
        if not fwhm_px > 0:
            raise ValueError(f"a Gaussian PSF needs FWHM > 0 pixels, got {fwhm_px}")
        sigma = fwhm_px / (2 * math.sqrt(2 * math.log(2)))
        u = (np.arange(-half_px * oversamp, half_px * oversamp + 1)) / oversamp
        s2 = math.sqrt(2) * sigma
        one = (erf((u + 0.5) / s2) - erf((u - 0.5) / s2)) / 2
        return cls(np.outer(one, one), int(oversamp))

    @property
    def half_px(self) -> float:
        """Half-width of the model in pixels."""
        return float((self.grid.shape[0] // 2) / self.oversamp)

    def stamp(
        self,
        half: int,
        dx: float = 0.0,
        dy: float = 0.0,
        jacobian: np.ndarray | None = None,
    ) -> np.ndarray:
        """The PSF of a source at ``(dx, dy)`` from the centre of a ``2 half + 1`` square stamp.

        ``jacobian`` (2x2, rows/columns in (x, y) order) maps offsets on the stamp's pixel grid
        to offsets on the model's grid (a template PSF seen on the science grid); values are
        then scaled by its determinant (the ratio of pixel areas). The stamp sums to the flux
        fraction it encloses (< 1 when the stamp cuts off the wings).
        """
        if jacobian is None and self.oversamp > 1:
            return self._fourier_stamp(half, dx, dy)
        off = np.arange(-half, half + 1, dtype=np.float64)
        ux = off[None, :] - dx
        uy = off[:, None] - dy
        ux, uy = np.broadcast_arrays(ux, uy)
        scale = 1.0
        if jacobian is not None:
            j = np.asarray(jacobian, dtype=np.float64)
            ux, uy = j[0, 0] * ux + j[0, 1] * uy, j[1, 0] * ux + j[1, 1] * uy
            scale = abs(float(np.linalg.det(j)))
        c = self.grid.shape[0] // 2
        coords = np.stack([c + uy * self.oversamp, c + ux * self.oversamp])
        out = ndimage.map_coordinates(self.grid, coords, order=3, mode="constant", cval=0.0)
        # never clipped at zero: an estimated model's wings are noise around zero, and a clip
        # turns it into a positive pedestal that broadens the (renormalised) template PSF; on
        # issue 9's Roman scenes that moved fluxes up 1-2 % with a less smoothed model
        return np.asarray(out * scale)

    def _fourier_stamp(self, half: int, dx: float, dy: float) -> np.ndarray:
        """:meth:`stamp` without a Jacobian, by a Fourier shift of the oversampled grid.

        A pixel-convolved PSF on a 4x grid is sampled at about its Nyquist rate (R062: optical
        cut-off 2.04 cycles per pixel, the grid's Nyquist 2): a cubic spline between its samples
        misses by up to 1.5 % of the flux at some sub-pixel phases (0.65 % rms; order 5: 0.5 %),
        which the light curve sees as scatter from one dither to the next. A band-limited
        signal is shifted exactly by a phase ramp; the grid around the stamp is cropped first
        (with a margin that keeps the wrap-around at the wings' level).
        """
        o = self.oversamp
        c = self.grid.shape[0] // 2
        r = (half + 2) * o + 8
        lo, hi = max(0, c - r), min(self.grid.shape[0], c + r + 1)
        crop = np.zeros((2 * r + 1, 2 * r + 1))
        crop[lo - c + r : hi - c + r, lo - c + r : hi - c + r] = self.grid[lo:hi, lo:hi]
        # value at fine coordinate r + (k - d) o: shift by the fractional part, index the rest
        sy, sx = -dy * o, -dx * o
        ny, nx = math.floor(sy), math.floor(sx)
        ty, tx = sy - ny, sx - nx
        spec = np.fft.rfft2(crop)
        fy = np.fft.fftfreq(crop.shape[0])[:, None]
        fx = np.fft.rfftfreq(crop.shape[1])[None, :]
        shifted = np.fft.irfft2(spec * np.exp(2j * np.pi * (fy * ty + fx * tx)), s=crop.shape)
        k = np.arange(-half, half + 1) * o
        return np.asarray(shifted[np.ix_(r + k + ny, r + k + nx)])

    def enclosed(self, half: int) -> float:
        """The flux fraction in a ``2 half + 1`` pixel square, averaged over sub-pixel phases."""
        o, c = self.oversamp, self.grid.shape[0] // 2
        k = np.arange(-half * o, half * o + 1, o)
        sums = [self.grid[np.ix_(c + i + k, c + j + k)].sum() for i in range(o) for j in range(o)]
        return float(np.mean(sums))

    def fwhm_px(self) -> float:
        """FWHM in pixels of the effective PSF (from the area above half the peak)."""
        peak = float(self.grid.max())
        area = float(np.count_nonzero(self.grid >= peak / 2)) / self.oversamp**2
        return 2 * math.sqrt(area / math.pi)


def _centred_square(psf: np.ndarray) -> np.ndarray:
    """An odd square array with the PSF's centre on its middle sample."""
    psf = np.asarray(psf, dtype=np.float64)
    if psf.shape[0] % 2 == 0 or psf.shape[1] % 2 == 0:
        # centred on an even array: the centre is between bins; pad one row/column to make
        # the centre a bin after a half-bin shift (a spline shift, accurate for smooth PSFs)
        psf = ndimage.shift(
            np.pad(psf, ((0, psf.shape[0] % 2 == 0), (0, psf.shape[1] % 2 == 0))),
            (0.5 * (psf.shape[0] % 2 == 0), 0.5 * (psf.shape[1] % 2 == 0)),
            order=3,
            mode="constant",
        )
    n = max(psf.shape)
    if psf.shape[0] != psf.shape[1]:
        psf = np.pad(psf, (((n - psf.shape[0]) // 2,) * 2, ((n - psf.shape[1]) // 2,) * 2))
    return psf


def parse_psf_option(text: str) -> tuple[str, float | str]:
    """``gaussian:FWHM`` -> ("gaussian", fwhm); anything else is a file path -> ("file", path)."""
    if text.lower().startswith("gaussian:"):
        try:
            fwhm = float(text.split(":", 1)[1])
        except ValueError:
            raise ValueError(
                f"--psf gaussian:FWHM needs a number of pixels, got {text!r}"
            ) from None
        if not fwhm > 0:
            raise ValueError(f"--psf gaussian:FWHM needs FWHM > 0 pixels, got {text!r}")
        return "gaussian", fwhm
    return "file", text
