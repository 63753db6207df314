"""Files of the Roman photometry pipeline: exposure lists, FITS images, PSF images, products.

* Exposure lists are phrosty's format: whitespace-separated text with the header
  ``path pointing sca mjd band`` (any order, extra columns allowed), ``#`` comments, and an
  optional ``psf`` column naming a PSF image per exposure (``-`` for none). Relative paths are
  taken from ``base_path`` when given, else from the list's own folder.
* Images are FITS: pixels in an image extension named ``SCI``, else the primary HDU (else the
  first 2-D image extension); optional ``ERR`` (1 sigma) or ``VAR`` extension and ``DQ``
  (non-zero = bad); a celestial WCS in the pixel header (else the primary header); the magnitude
  zero point in ``ZPTMAG`` or ``MAGZP`` (or a key the caller names); ``GAIN`` (e-/unit) optional.
* PSF images are centred on their array, normalised, and oversampled by the factor in the
  ``OVERSAMP`` keyword (1 when absent).

Astropy is imported here, never by the daemon.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.dia.errors import DiaInputError

REQUIRED_COLUMNS = ("path", "pointing", "sca", "mjd", "band")
ZEROPOINT_KEYS = ("ZPTMAG", "MAGZP")
NO_PSF = {"-", "none", "null", "nan", ""}


class ListFormatError(DiaInputError):
    """An exposure list is malformed; the message names the file, the line and the column."""


class ImageReadError(DiaInputError):
    """A FITS image (or PSF image) cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class ExposureRow:
    """One line of an exposure list, with its paths resolved."""

    path: Path
    pointing: int
    sca: int
    mjd: float
    band: str
    psf_path: Path | None
    source: str  # "list.txt:12", for messages


def read_list(
    list_path: Path, band: str | None = None, base_path: Path | None = None
) -> list[ExposureRow]:
    """The rows of ``list_path`` (of ``band`` when given, case-insensitive), paths resolved."""
    try:
        text = Path(list_path).read_text()
    except OSError as exc:
        raise ListFormatError(f"{list_path}: cannot read the list: {exc.strerror or exc}") from exc
    root = Path(base_path) if base_path is not None else Path(list_path).resolve().parent
    header: list[str] | None = None
    rows: list[ExposureRow] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        where = f"{list_path}:{lineno}"
        if header is None:
            header = [f.lower() for f in fields]
            if "observation_id" in header and "pointing" not in header:
                # phrosty's lists since 2025 name the pointing column observation_id
                header[header.index("observation_id")] = "pointing"
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise ListFormatError(
                    f"{where}: header must name the columns {' '.join(REQUIRED_COLUMNS)} "
                    f"(optionally psf); missing {', '.join(missing)}"
                )
            continue
        if len(fields) != len(header):
            raise ListFormatError(
                f"{where}: expected {len(header)} columns ({' '.join(header)}), got {len(fields)}"
            )
        rec = dict(zip(header, fields, strict=True))
        if band is not None and rec["band"].lower() != band.lower():
            continue
        values: dict[str, Any] = {}
        for col, conv in (("pointing", int), ("sca", int), ("mjd", float)):
            try:
                values[col] = conv(rec[col])
            except ValueError:
                kind = "an integer" if conv is int else "a number"
                raise ListFormatError(
                    f"{where}: column {col}: expected {kind}, got {rec[col]!r}"
                ) from None
        psf_text = rec.get("psf", "-")
        rows.append(
            ExposureRow(
                path=_resolve(root, rec["path"]),
                pointing=values["pointing"],
                sca=values["sca"],
                mjd=values["mjd"],
                band=rec["band"],
                psf_path=None if psf_text.lower() in NO_PSF else _resolve(root, psf_text),
                source=where,
            )
        )
    if header is None:
        raise ListFormatError(
            f"{list_path}: empty list (expected a header {' '.join(REQUIRED_COLUMNS)})"
        )
    return rows


def _resolve(root: Path, text: str) -> Path:
    p = Path(text).expanduser()
    return p if p.is_absolute() else root / p


def write_list(path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    """Write an exposure list (used by the simulator and tests)."""
    lines = [" ".join(columns)]
    lines += [" ".join(str(r[c]) for c in columns) for r in rows]
    Path(path).write_text("\n".join(lines) + "\n")


@dataclass
class ImageCutout:
    """Pixels of one exposure inside a box, with everything the pipeline needs from the file."""

    path: Path
    data: np.ndarray  # float64, bad pixels kept as read (see mask)
    variance: np.ndarray | None  # from ERR**2 or VAR; None when the file has neither
    mask: np.ndarray  # True = bad (DQ != 0, non-finite data or variance, variance <= 0)
    wcs: Any  # astropy.wcs.WCS of the cutout (pixel (0, 0) = the box's first pixel)
    origin: tuple[int, int]  # (row0, col0) of the cutout in the full image
    full_shape: tuple[int, int]
    zeropoint: float  # NaN when no zero-point keyword was found
    gain: float | None


class FitsImage:
    """An open FITS exposure: geometry first, then pixels of any box (memory-mapped)."""

    def __init__(self, path: Path, zeropoint_key: str | None = None) -> None:
        from astropy.io import fits

        self.path = Path(path)
        self._unmapped: Any = None
        try:
            self._hdul = fits.open(self.path, memmap=True, lazy_load_hdus=False)
        except (OSError, ValueError, TypeError) as exc:
            raise ImageReadError(f"{self.path}: cannot open as FITS: {exc}") from exc
        try:
            self._sci = self._find_pixels()
            self._err = self._find_ext("ERR")
            self._var = self._find_ext("VAR") if self._err is None else None
            self._dq = self._find_ext("DQ")
            self.shape = (int(self._sci.shape[0]), int(self._sci.shape[1]))
            for name, ext in (("ERR", self._err), ("VAR", self._var), ("DQ", self._dq)):
                if ext is not None and tuple(ext.shape) != self.shape:
                    raise ImageReadError(
                        f"{self.path}: extension {name} has shape {tuple(ext.shape)}, "
                        f"the pixels {self.shape}"
                    )
            self.wcs = self._celestial_wcs()
            self.zeropoint = self._header_float(
                (zeropoint_key,) if zeropoint_key else ZEROPOINT_KEYS
            )
            gain = self._header_float(("GAIN",))
            self.gain = gain if math.isfinite(gain) and gain > 0 else None
        except Exception:
            self._hdul.close()
            raise

    def __enter__(self) -> FitsImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._hdul.close()
        if self._unmapped is not None:
            self._unmapped.close()

    def _find_pixels(self) -> Any:
        sci = self._find_ext("SCI")
        if sci is not None:
            return sci
        for hdu in self._hdul:
            if getattr(hdu, "is_image", False) and hdu.header.get("NAXIS") == 2:
                return hdu
        raise ImageReadError(
            f"{self.path}: no 2-D image (expected a SCI extension or pixels in the primary HDU)"
        )

    def _find_ext(self, name: str) -> Any:
        for hdu in self._hdul:
            if str(hdu.header.get("EXTNAME", "")).strip().upper() == name:
                if not getattr(hdu, "is_image", False) or hdu.header.get("NAXIS") != 2:
                    raise ImageReadError(f"{self.path}: extension {name} is not a 2-D image")
                return hdu
        return None

    def _celestial_wcs(self) -> Any:
        import warnings

        from astropy.wcs import WCS, FITSFixedWarning

        for header in (self._sci.header, self._hdul[0].header):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FITSFixedWarning)
                    wcs = WCS(header, naxis=2)
            except Exception:
                continue
            if wcs.has_celestial:
                return wcs.celestial
        raise ImageReadError(
            f"{self.path}: no celestial WCS in the pixel or primary header "
            "(expected CTYPE1/2 = RA---TAN/DEC--TAN or similar, CRVAL, CRPIX, CD or PC/CDELT)"
        )

    def _header_float(self, keys: tuple[str, ...]) -> float:
        for header in (self._sci.header, self._hdul[0].header):
            for key in keys:
                if key in header:
                    try:
                        return float(header[key])
                    except (TypeError, ValueError):
                        raise ImageReadError(
                            f"{self.path}: header keyword {key} must be a number, "
                            f"got {header[key]!r}"
                        ) from None
        return math.nan

    def _pixels(self, hdu: Any, box: tuple[slice, slice], dtype: Any = np.float64) -> np.ndarray:
        """The pixels of ``box``, as ``dtype`` (None: the file's own type and byte order)."""
        try:
            return np.array(hdu.section[box], dtype=dtype)
        except ValueError as exc:
            # scaled integers (BZERO/BSCALE, e.g. a uint32 DQ) cannot be memory-mapped
            if "memory-mapped" not in str(exc):
                raise
        if self._unmapped is None:
            from astropy.io import fits

            self._unmapped = fits.open(self.path, memmap=False)
        index = next(i for i, h in enumerate(self._hdul) if h is hdu)
        return np.array(self._unmapped[index].data[box], dtype=dtype)

    def world_to_pixel(self, ra_deg: float, dec_deg: float) -> tuple[float, float]:
        """0-based pixel position ``(x, y)`` (x = column) of a sky position."""
        x, y = self.wcs.all_world2pix([[ra_deg, dec_deg]], 0)[0]
        return float(x), float(y)

    def read(self, rows: slice | None = None, cols: slice | None = None) -> ImageCutout:
        """Pixels, variance and mask inside ``[rows, cols]`` (clipped to the image)."""
        r0, r1, _ = (rows or slice(None)).indices(self.shape[0])
        c0, c1, _ = (cols or slice(None)).indices(self.shape[1])
        if r1 <= r0 or c1 <= c0:
            raise ImageReadError(f"{self.path}: the requested box lies outside the image")
        box = (slice(r0, r1), slice(c0, c1))
        try:
            data = self._pixels(self._sci, box)
            variance = None
            if self._err is not None:
                variance = self._pixels(self._err, box)
                np.square(variance, out=variance)
            elif self._var is not None:
                variance = self._pixels(self._var, box)
            mask = ~np.isfinite(data)
            if self._dq is not None:
                # compared in the file's own integer type: a float64 copy cost 0.1 s on 4088^2
                mask |= self._pixels(self._dq, box, None) != 0
        except (OSError, ValueError, TypeError) as exc:
            raise ImageReadError(f"{self.path}: cannot read the pixels: {exc}") from exc
        if variance is not None:
            with np.errstate(invalid="ignore"):
                mask |= ~np.isfinite(variance) | (variance <= 0)
        wcs = self.wcs.slice(box)
        return ImageCutout(
            path=self.path,
            data=data,
            variance=variance,
            mask=mask,
            wcs=wcs,
            origin=(r0, c0),
            full_shape=self.shape,
            zeropoint=self.zeropoint,
            gain=self.gain,
        )


@dataclass(frozen=True)
class PsfImage:
    """A PSF file's samples on its own grid, put on the unit-total-flux scale."""

    data: np.ndarray  # sums to the flux fraction the stamp holds (<= 1), never renormalised to 1
    oversamp: int  # samples per detector pixel
    pixel_convolved: bool  # True: samples of the pixel-convolved (effective) PSF
    note: str  # how the scale was read, for the row's notes ("" when the file was on it)


UNIT_FLUX_SUM = (0.7, 1.001)  # a unit-total-flux stamp sums to its encircled energy


def read_psf_image(path: Path) -> PsfImage:
    """A PSF image, its oversampling (``OVERSAMP``, default 1) and its pixel convolution.

    ``PIXCONV`` (header) says whether the samples already include the detector pixel. Absent,
    the file is taken as pixel-convolved: that is what the Roman SN PIT's PSF files are (snappl's
    ``get_stamp``, GalSim's ``drawImage`` of the Roman PSF with the pixel) and what issue 9's
    scenes carry; instrumental PSFs (STPSF's oversampled extension, our simulator) say
    ``PIXCONV = F``.

    The scale is kept (see ``notes/dia.md``: renormalising a stamp to sum 1 biases every flux
    by its missing encircled energy). A file whose samples sum to ``OVERSAMP**2`` times that
    (samples in flux per detector pixel) is divided by ``OVERSAMP**2``; any other sum (an
    arbitrary scale) is normalised to 1 and said so in the row's notes.
    """
    from astropy.io import fits

    try:
        with fits.open(path) as hdul:
            hdu = next(
                (h for h in hdul if getattr(h, "is_image", False) and h.header.get("NAXIS") == 2),
                None,
            )
            if hdu is None:
                raise ImageReadError(f"{path}: no 2-D PSF image in the file")
            psf = np.array(hdu.data, dtype=np.float64)
            oversamp = hdu.header.get("OVERSAMP", hdul[0].header.get("OVERSAMP", 1))
            pixconv = hdu.header.get("PIXCONV", hdul[0].header.get("PIXCONV", True))
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read the PSF image: {exc}") from exc
    try:
        factor = round(float(oversamp))
    except (TypeError, ValueError):
        raise ImageReadError(
            f"{path}: OVERSAMP must be a positive integer, got {oversamp!r}"
        ) from None
    if not isinstance(pixconv, bool):
        raise ImageReadError(f"{path}: PIXCONV must be T or F, got {pixconv!r}")
    total = float(np.nansum(psf))
    if factor < 1 or not np.all(np.isfinite(psf)) or total <= 0:
        raise ImageReadError(
            f"{path}: a PSF image must be finite with a positive sum and OVERSAMP >= 1 "
            f"(got sum {total}, OVERSAMP {oversamp!r})"
        )
    note = ""
    if UNIT_FLUX_SUM[0] <= total <= UNIT_FLUX_SUM[1]:
        scale = 1.0
    elif UNIT_FLUX_SUM[0] <= total / factor**2 <= UNIT_FLUX_SUM[1]:
        scale = 1.0 / factor**2
    else:
        scale = 1.0 / total
        note = f"PSF {path.name} summed to {total:.4g}: normalised to 1 (wings beyond it lost)"
    return PsfImage(psf * scale, factor, pixconv, note)


def write_image(
    path: Path, data: np.ndarray, header: dict[str, Any] | None = None, wcs: Any = None
) -> None:
    """Write one image as a FITS primary HDU (products of ``--keep-products``)."""
    from astropy.io import fits

    hdr = fits.Header()
    if wcs is not None:
        hdr.update(wcs.to_header(relax=True))
    for key, value in (header or {}).items():
        hdr[key] = value
    fits.PrimaryHDU(np.asarray(data, dtype=np.float32), header=hdr).writeto(path, overwrite=True)
