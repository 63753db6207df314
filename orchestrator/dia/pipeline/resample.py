"""Resampling of a template onto the science pixel grid through the two WCS.

Each science pixel centre is carried to the sky (science WCS) and back to template pixels
(template WCS); the template is interpolated there with a normalised Lanczos-3 kernel and scaled
by the Jacobian determinant (template pixels per science pixel) so that fluxes are conserved.

Two variances come back. ``variance = sum w^2 V J^2`` is each output pixel's own variance;
interpolation correlates neighbours, so it is smaller than the noise power at low spatial
frequencies, which is the local mean variance (the kernel's transfer function is 1 at zero
frequency): ``noise_power = sum |w| V J^2 / sum |w|`` (absolute weights keep it positive next
to bright stars, where V changes sharply). PSF photometry and the decorrelation see the latter,
which is what the pipeline passes to the subtraction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import RectBivariateSpline

LANCZOS_A = 3


@dataclass
class Resampled:
    image: np.ndarray
    variance: np.ndarray
    noise_power: np.ndarray
    mask: np.ndarray  # True where a bad or missing template pixel entered the interpolation
    outside: np.ndarray  # True where the interpolation reached beyond the template (NaN there)
    coverage: float  # fraction of output pixels inside the template


def pixel_map(
    science_wcs: object, template_wcs: object, shape: tuple[int, int], step: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Template pixel coordinates ``(x_t, y_t)`` of every science pixel centre of ``shape``.

    The WCS transforms are evaluated on a grid every ``step`` pixels and interpolated with a
    bicubic spline (a TAN/SIP mapping is smooth; this keeps a 4088^2 map cheap).
    """
    ny, nx = shape
    gy = np.unique(np.append(np.arange(0, ny, step), ny - 1)).astype(float)
    gx = np.unique(np.append(np.arange(0, nx, step), nx - 1)).astype(float)
    yy, xx = np.meshgrid(gy, gx, indexing="ij")
    ra, dec = science_wcs.all_pix2world(xx.ravel(), yy.ravel(), 0)  # type: ignore[attr-defined]
    tx, ty = template_wcs.all_world2pix(ra, dec, 0)  # type: ignore[attr-defined]
    tx = np.asarray(tx).reshape(xx.shape)
    ty = np.asarray(ty).reshape(xx.shape)
    ky, kx = min(3, len(gy) - 1), min(3, len(gx) - 1)
    sx = RectBivariateSpline(gy, gx, tx, kx=ky, ky=kx)
    sy = RectBivariateSpline(gy, gx, ty, kx=ky, ky=kx)
    ay, ax = np.arange(ny, dtype=float), np.arange(nx, dtype=float)
    return sx(ay, ax), sy(ay, ax)


def jacobian_at(
    science_wcs: object, template_wcs: object, x: float, y: float, eps: float = 0.5
) -> np.ndarray:
    """d(template pixel)/d(science pixel) at science pixel ``(x, y)``; rows/columns (x, y)."""
    pts = np.array([[x - eps, y], [x + eps, y], [x, y - eps], [x, y + eps]])
    ra, dec = science_wcs.all_pix2world(pts[:, 0], pts[:, 1], 0)  # type: ignore[attr-defined]
    tx, ty = template_wcs.all_world2pix(ra, dec, 0)  # type: ignore[attr-defined]
    tx, ty = np.asarray(tx), np.asarray(ty)
    return np.array(
        [
            [(tx[1] - tx[0]) / (2 * eps), (tx[3] - tx[2]) / (2 * eps)],
            [(ty[1] - ty[0]) / (2 * eps), (ty[3] - ty[2]) / (2 * eps)],
        ]
    )


def _lanczos(t: np.ndarray, a: int = LANCZOS_A) -> np.ndarray:
    out = np.sinc(t) * np.sinc(t / a)
    return np.where(np.abs(t) < a, out, 0.0)


def resample(
    image: np.ndarray,
    variance: np.ndarray,
    mask: np.ndarray,
    x_src: np.ndarray,
    y_src: np.ndarray,
    *,
    block_rows: int = 256,
) -> Resampled:
    """``image`` (with ``variance`` and bad-pixel ``mask``) sampled at ``(x_src, y_src)``."""
    a = LANCZOS_A
    ny, nx = image.shape
    out_shape = x_src.shape
    # Jacobian determinant of the map, per output pixel (pixel-area ratio)
    dxdc = np.gradient(x_src, axis=1)
    dxdr = np.gradient(x_src, axis=0)
    dydc = np.gradient(y_src, axis=1)
    dydr = np.gradient(y_src, axis=0)
    det = np.abs(dxdc * dydr - dxdr * dydc)
    # flagged pixels keep their (inpainted) values; they mark the output mask only
    img0 = np.where(np.isfinite(image), image, 0.0)
    var0 = np.where(np.isfinite(variance), variance, 0.0)
    bad_src = mask | ~np.isfinite(image) | ~np.isfinite(variance)
    out = np.zeros(out_shape)
    var_out = np.zeros(out_shape)
    np_out = np.zeros(out_shape)
    bad_out = np.zeros(out_shape, dtype=bool)
    lost_out = np.zeros(out_shape, dtype=bool)
    inside = (x_src >= -0.5) & (x_src <= nx - 0.5) & (y_src >= -0.5) & (y_src <= ny - 0.5)
    for r0 in range(0, out_shape[0], block_rows):
        sl = slice(r0, min(out_shape[0], r0 + block_rows))
        xs, ys = x_src[sl], y_src[sl]
        fx, fy = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
        taps = range(-a + 1, a + 1)
        wx = [_lanczos(xs - (fx + k)) for k in taps]
        wy = [_lanczos(ys - (fy + k)) for k in taps]
        sx, sy = sum(wx), sum(wy)
        wx = [w / sx for w in wx]
        wy = [w / sy for w in wy]
        acc = np.zeros(xs.shape)
        acc_v = np.zeros(xs.shape)
        acc_p = np.zeros(xs.shape)
        acc_a = np.zeros(xs.shape)
        bad = np.zeros(xs.shape, dtype=bool)
        oob = np.zeros(xs.shape, dtype=bool)
        for ky, wyk in zip(taps, wy, strict=True):
            iy = fy + ky
            oky = (iy >= 0) & (iy < ny)
            iyc = np.clip(iy, 0, ny - 1)
            for kx, wxk in zip(taps, wx, strict=True):
                ix = fx + kx
                ok = oky & (ix >= 0) & (ix < nx)
                ixc = np.clip(ix, 0, nx - 1)
                w = wyk * wxk
                acc += w * img0[iyc, ixc]
                vv = var0[iyc, ixc]
                acc_v += w * w * vv
                acc_p += np.abs(w) * vv
                acc_a += np.abs(w)
                bad |= (w != 0) & bad_src[iyc, ixc]
                oob |= (w != 0) & ~ok
        out[sl], var_out[sl], np_out[sl], bad_out[sl] = acc, acc_v, acc_p / acc_a, bad
        lost_out[sl] = oob
    out *= det
    var_out *= det**2
    np_out *= det**2
    # values stay where only flagged (inpainted) pixels entered; missing coverage is NaN
    lost = ~inside | lost_out
    bad_out |= lost
    out[lost] = np.nan
    var_out[lost] = np.nan
    np_out[lost] = np.nan
    return Resampled(out, var_out, np_out, bad_out, lost, float(inside.mean()))
