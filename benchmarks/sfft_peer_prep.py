"""phrosty's per-image steps for the sfft-romansnpit peer (``sfft_peer.py``): sky and detection
mask, the fixed fit mask, PSF stamps from files or from stars.

Split from ``sfft_peer.py`` (the flow and its driver) to keep both short; the why of each step
is in that module's docstring.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

KER_HW = 9  # phrosty's kernel half-width (SpaceSFFT_Flow's default)
SN_CLEAR_PX = 20.0  # fix 1: the object's surroundings out of the fit
BAD_GROW_PX = KER_HW + 3.0  # fix 1: how far a bad pixel (and its source) reaches after convolution
EPSF_HALF_PX, EPSF_STARS = 12, 50


def sky_subtract(data: Any) -> tuple[Any, Any, float, Any, Any]:
    """phrosty's ``sky_subtract`` (SEx_SkySubtract.SSS) with sep: sky-subtracted image, the
    detection mask it hands to SFFT, the median sky RMS, the catalogue and the segmentation."""
    import numpy as np
    import sep
    from scipy import ndimage

    first = sep.Background(data, bw=64, bh=64, fw=3, fh=3)
    objects, seg = sep.extract(
        data - first.back(),
        1.5,
        err=first.globalrms,
        minarea=5,
        deblend_cont=0.005,
        segmentation_map=True,
    )
    sky = sep.Background(data, mask=seg > 0, bw=64, bh=64, fw=3, fh=3)
    sub = data - sky.back()
    x, y, a, b, th = (objects[k] for k in ("x", "y", "a", "b", "theta"))
    kron, _ = sep.kron_radius(sub, x, y, a, b, th, 6.0)
    flux_auto, _, _ = sep.sum_ellipse(sub, x, y, a, b, th, 2.5 * kron, subpix=1)
    radius, _ = sep.flux_radius(sub, x, y, 6.0 * a, 0.5, normflux=flux_auto, subpix=5)
    kept = np.isin(seg, np.flatnonzero(radius > 2.0) + 1)  # RADIUS_CUT_DETMASK = 2
    grown = ndimage.binary_dilation(kept, ndimage.generate_binary_structure(2, 1), iterations=2)
    detmask = kept | (grown & (seg == 0))
    return sub, detmask, float(np.median(sky.rms())), objects, seg


def fixed_fit_mask(detmask: Any, seg: Any, bad: Any, x: float, y: float) -> Any:
    """Fix 1: sources touching bad pixels, their surroundings, and the object's out of the fit."""
    import numpy as np
    from scipy import ndimage

    touching = np.unique(seg[bad & (seg > 0)])
    spoiled = bad | np.isin(seg, touching[touching > 0])
    near_bad = ndimage.distance_transform_edt(~spoiled) <= BAD_GROW_PX
    yy, xx = np.ogrid[: detmask.shape[0], : detmask.shape[1]]
    near_object = (xx - x) ** 2 + (yy - y) ** 2 <= SN_CLEAR_PX**2
    return detmask & ~near_bad & ~near_object


def psf_from_file(path: Path, dx: float, dy: float) -> Any:
    """A native-pixel stamp of a PSF file (odd, centred, ``OVERSAMP`` samples a pixel, and
    ``PIXCONV`` F when the detector pixel is not in it) centred ``(dx, dy)`` off its middle
    pixel, normalised to sum 1 as phrosty's ``keep_psf_data`` does."""
    import numpy as np
    from astropy.io import fits
    from scipy import ndimage

    with fits.open(path) as hdul:
        hdu = next(h for h in hdul if h.is_image and h.header.get("NAXIS") == 2)
        grid = np.array(hdu.data, dtype=np.float64)
        o = int(hdu.header.get("OVERSAMP", hdul[0].header.get("OVERSAMP", 1)))
        pixconv = bool(hdu.header.get("PIXCONV", hdul[0].header.get("PIXCONV", True)))
    if not pixconv and o > 1:  # integrate over the detector pixel first
        box = np.ones(o + 1) if o % 2 == 0 else np.ones(o)
        if o % 2 == 0:
            box[[0, -1]] = 0.5
        for axis in (0, 1):
            grid = ndimage.convolve1d(grid, box / box.sum(), axis=axis, mode="constant")
    c, half = grid.shape[0] // 2, grid.shape[0] // 2 // o
    k = np.arange(-half, half + 1)
    yy, xx = np.meshgrid(c + o * (k - dy), c + o * (k - dx), indexing="ij")
    stamp = ndimage.map_coordinates(grid, [yy, xx], order=3, mode="constant")
    return stamp / stamp.sum()


def psf_from_stars(sub: Any, bad: Any, objects: Any, x: float, y: float, dx: float, dy: float):
    """An ePSF (photutils, 4x) from isolated unflagged stars, rendered like a file's, sum 1."""
    import numpy as np
    from astropy.nddata import NDData
    from astropy.table import Table
    from photutils.psf import EPSFBuilder, extract_stars
    from scipy import ndimage

    h = EPSF_HALF_PX
    ny, nx = sub.shape
    sx, sy = objects["x"], objects["y"]
    flagged = ndimage.maximum_filter(bad.astype(np.uint8), size=2 * h + 1) > 0
    ix = np.clip(np.rint(sx).astype(int), 0, nx - 1)
    iy = np.clip(np.rint(sy).astype(int), 0, ny - 1)
    d2 = (sx[:, None] - sx[None, :]) ** 2 + (sy[:, None] - sy[None, :]) ** 2
    np.fill_diagonal(d2, np.inf)
    inside = (sx > h + 1) & (sx < nx - h - 2) & (sy > h + 1) & (sy < ny - h - 2)
    ok = inside & (objects["flag"] == 0) & ~flagged[iy, ix] & (d2.min(axis=1) > 2 * h * h)
    ok &= np.hypot(sx - x, sy - y) > SN_CLEAR_PX
    idx = np.flatnonzero(ok)
    idx = idx[np.argsort(-objects["flux"][idx])][:EPSF_STARS]
    if idx.size < 5:
        raise RuntimeError(f"only {idx.size} isolated unflagged stars for the ePSF")
    stars = extract_stars(NDData(sub), Table({"x": sx[idx], "y": sy[idx]}), size=2 * h + 1)
    epsf, _ = EPSFBuilder(oversampling=4, progress_bar=False)(stars)
    yy, xx = np.mgrid[0 : 2 * h + 1, 0 : 2 * h + 1]
    stamp = epsf.evaluate(xx, yy, 1.0, h + dx, h + dy)
    return stamp / stamp.sum()
