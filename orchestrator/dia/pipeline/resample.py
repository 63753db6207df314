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

import numba
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


_SQRT3_2 = np.sqrt(3.0) / 2
# cos and sin of pi m / 3 for the tap offsets m = -2 .. 3
_COS_M3 = np.array([-0.5, 0.5, 1.0, 0.5, -0.5, -1.0])
_SIN_M3 = np.array([-_SQRT3_2, -_SQRT3_2, 0.0, _SQRT3_2, _SQRT3_2, 0.0])
_SIGN_M = np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])  # (-1)^m


@numba.njit(cache=True, fastmath=False, inline="always")
def _sinc(t: float) -> float:  # pragma: no cover
    """``np.sinc``: ``sin(pi t) / (pi t)``, 1 at 0."""
    if t == 0.0:
        return 1.0
    pt = np.pi * t
    return float(np.sin(pt) / pt)


@numba.njit(cache=True, fastmath=False)
def _lanczos_taps(frac: float, w: np.ndarray) -> None:  # pragma: no cover
    """The 6 Lanczos-3 weights ``sinc(t) sinc(t / 3)`` (0 for ``|t| >= 3``) at the offsets
    ``t = frac - m``, ``m = -2 .. 3``, normalised to sum 1.

    One sine per axis instead of twelve: ``sin(pi (f - m)) = (-1)^m sin(pi f)`` (a factor
    common to the taps), ``sin(pi (f - m) / 3)`` by the angle difference formula (agrees with
    ``np.sinc`` to a few units in the last place after normalisation).
    """
    if frac == 0.0:
        # on a pixel centre np.sinc(m) is not exactly 0 for m != 0 (sin(pi m) ~ 1e-16): keep
        # those tiny weights, as the reference does, so that the same neighbours flag the mask
        total = 0.0
        for k in range(6):
            t = frac - (k - 2)
            v = _sinc(t) * _sinc(t / LANCZOS_A) if abs(t) < LANCZOS_A else 0.0
            w[k] = v
            total += v
        for k in range(6):
            w[k] = w[k] / total
        return
    # 0 < frac < 1: every offset t = frac - m is non-zero and inside (-3, 3), and each weight
    # is (-1)^m sin(pi frac) sin(pi t / 3) / (pi^2 t^2 / 3); the normalisation cancels the
    # common factor sin(pi frac) 3 / pi^2, which leaves one sine and one square root per axis
    s3 = np.sin(np.pi * frac / 3)
    c3 = np.sqrt(1.0 - s3 * s3)  # pi frac / 3 lies in (0, pi / 3): the cosine is over 1/2
    total = 0.0
    for k in range(6):
        t = frac - (k - 2)
        v = _SIGN_M[k] * (s3 * _COS_M3[k] - c3 * _SIN_M3[k]) / (t * t)
        w[k] = v
        total += v
    inv = 1.0 / total
    for k in range(6):
        w[k] = w[k] * inv


@numba.njit(parallel=True, cache=True, fastmath=False)
def _resample_kernel(  # pragma: no cover
    img: np.ndarray,
    var: np.ndarray,
    bad_src: np.ndarray,
    x_src: np.ndarray,
    y_src: np.ndarray,
    out: np.ndarray,
    var_out: np.ndarray,
    np_out: np.ndarray,
    bad_out: np.ndarray,
    lost_out: np.ndarray,
) -> None:
    """One output pixel per iteration: 6x6 normalised Lanczos taps, Jacobian of the map by
    central differences (one-sided on the edges, as ``np.gradient``); NaN where coverage is lost.

    A pixel's output is ``det * sum w I``, ``det^2 sum w^2 V``, ``det^2 sum |w| V / sum |w|``
    with ``w = wy * wx`` normalised per axis; ``bad`` where a flagged source pixel has ``w != 0``,
    ``lost`` where a tap with ``w != 0`` is off the template or the centre lies beyond it.
    """
    a = LANCZOS_A
    ny, nx = img.shape
    n0, n1 = x_src.shape
    taps = 2 * a
    for r in numba.prange(n0):
        wx = np.empty(taps)
        wy = np.empty(taps)
        r_lo, r_hi = max(r - 1, 0), min(r + 1, n0 - 1)
        for c in range(n1):
            xs = x_src[r, c]
            ys = y_src[r, c]
            inside = xs >= -0.5 and xs <= nx - 0.5 and ys >= -0.5 and ys <= ny - 0.5
            if not inside:  # also a NaN coordinate
                out[r, c] = np.nan
                var_out[r, c] = np.nan
                np_out[r, c] = np.nan
                bad_out[r, c] = True
                lost_out[r, c] = True
                continue
            fx = np.floor(xs)
            fy = np.floor(ys)
            _lanczos_taps(xs - fx, wx)
            _lanczos_taps(ys - fy, wy)
            ix0 = int(fx) - a + 1
            iy0 = int(fy) - a + 1
            acc = 0.0
            acc_v = 0.0
            acc_p = 0.0
            acc_a = 0.0
            bad = False
            oob = False
            if iy0 >= 0 and iy0 + taps <= ny and ix0 >= 0 and ix0 + taps <= nx:
                # the whole footprint on the template (nearly every pixel): no clamping, and
                # a zero weight adds exactly nothing, so only the mask needs to test it
                for ky in range(taps):
                    iy = iy0 + ky
                    for kx in range(taps):
                        ix = ix0 + kx
                        w = wy[ky] * wx[kx]
                        aw = abs(w)
                        acc += w * img[iy, ix]
                        vv = var[iy, ix]
                        acc_v += w * w * vv
                        acc_p += aw * vv
                        acc_a += aw
                        if bad_src[iy, ix] and w != 0.0:
                            bad = True
            else:
                for ky in range(taps):
                    iy = iy0 + ky
                    oky = iy >= 0 and iy < ny
                    iyc = min(max(iy, 0), ny - 1)
                    for kx in range(taps):
                        w = wy[ky] * wx[kx]
                        if w == 0.0:
                            continue
                        ix = ix0 + kx
                        ixc = min(max(ix, 0), nx - 1)
                        acc += w * img[iyc, ixc]
                        vv = var[iyc, ixc]
                        acc_v += w * w * vv
                        acc_p += abs(w) * vv
                        acc_a += abs(w)
                        bad = bad or bad_src[iyc, ixc]
                        oob = oob or not (oky and ix >= 0 and ix < nx)
            c_lo, c_hi = max(c - 1, 0), min(c + 1, n1 - 1)
            dxdc = (x_src[r, c_hi] - x_src[r, c_lo]) / (c_hi - c_lo)
            dydc = (y_src[r, c_hi] - y_src[r, c_lo]) / (c_hi - c_lo)
            dxdr = (x_src[r_hi, c] - x_src[r_lo, c]) / (r_hi - r_lo)
            dydr = (y_src[r_hi, c] - y_src[r_lo, c]) / (r_hi - r_lo)
            det = abs(dxdc * dydr - dxdr * dydc)
            if oob:
                out[r, c] = np.nan
                var_out[r, c] = np.nan
                np_out[r, c] = np.nan
            else:
                out[r, c] = acc * det
                var_out[r, c] = acc_v * det**2
                np_out[r, c] = acc_p / acc_a * det**2
            bad_out[r, c] = bad or oob
            lost_out[r, c] = oob


def resample(
    image: np.ndarray,
    variance: np.ndarray,
    mask: np.ndarray,
    x_src: np.ndarray,
    y_src: np.ndarray,
) -> Resampled:
    """``image`` (with ``variance`` and bad-pixel ``mask``) sampled at ``(x_src, y_src)``.

    Flagged pixels keep their (inpainted) values and mark the output mask only; a non-finite
    image or variance pixel counts as zero (in that array) and flagged. Where the interpolation
    reaches beyond the template the output is NaN and ``outside`` (and ``mask``) is set.
    """
    if image.ndim != 2 or variance.shape != image.shape or mask.shape != image.shape:
        raise ValueError(
            f"resample: image {image.shape}, variance {variance.shape} and mask {mask.shape}"
            " must be one 2-d shape"
        )
    if x_src.shape != y_src.shape or x_src.ndim != 2 or min(x_src.shape) < 2:
        raise ValueError(
            f"resample: x_src {x_src.shape} and y_src {y_src.shape} must be one 2-d shape,"
            " at least 2 x 2 (the Jacobian takes differences)"
        )
    img_ok = np.isfinite(image)
    var_ok = np.isfinite(variance)
    # zero-filled copies only where something is not finite (the pipeline's inputs are
    # inpainted: two 135 MB copies saved on a whole 4088^2 frame)
    img0 = (image if img_ok.all() else np.where(img_ok, image, 0.0)).astype(np.float64, copy=False)
    var0 = (variance if var_ok.all() else np.where(var_ok, variance, 0.0)).astype(
        np.float64, copy=False
    )
    bad_src = np.asarray(mask, dtype=np.bool_) | ~img_ok | ~var_ok
    del img_ok, var_ok
    xs = np.ascontiguousarray(x_src, dtype=np.float64)
    ys = np.ascontiguousarray(y_src, dtype=np.float64)
    out = np.empty(xs.shape)
    var_out = np.empty(xs.shape)
    np_out = np.empty(xs.shape)
    bad_out = np.empty(xs.shape, dtype=np.bool_)
    lost_out = np.empty(xs.shape, dtype=np.bool_)
    _resample_kernel(img0, var0, bad_src, xs, ys, out, var_out, np_out, bad_out, lost_out)
    nx, ny = image.shape[1], image.shape[0]
    inside = (xs >= -0.5) & (xs <= nx - 0.5) & (ys >= -0.5) & (ys <= ny - 0.5)
    return Resampled(out, var_out, np_out, bad_out, lost_out, float(inside.mean()))
