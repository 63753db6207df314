"""Slow, obvious reference implementations: the oracle for the fast DIA kernels."""

from __future__ import annotations

import numpy as np

from orchestrator.dia import basis
from orchestrator.dia.rows import rank_update


def monomials(order: int) -> list[tuple[int, int]]:
    return [(deg - j, j) for deg in range(order + 1) for j in range(deg + 1)]


def coords(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Scaled coordinates in [-1, 1]: x across columns, y down rows."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    return 2 * xs / (shape[1] - 1) - 1, 2 * ys / (shape[0] - 1) - 1


def shifted(template: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``out[y, x] = template[y - dy, x - dx]``, zero where that falls outside the image."""
    out = np.zeros_like(template)
    n0, n1 = template.shape
    for y in range(n0):
        for x in range(n1):
            sy, sx = y - dy, x - dx
            if 0 <= sy < n0 and 0 <= sx < n1:
                out[y, x] = template[sy, sx]
    return out


def design_matrix(
    template: np.ndarray, w: int, dk: int, db: int, constant_ratio: bool
) -> np.ndarray:
    """Columns in the modified delta basis (SFFT): ``p_t (T_k - T_0)``, then the kernel-sum
    column(s) ``p_t T_0``, then the background monomials; rows are pixels (C order)."""
    xs, ys = coords(template.shape)
    kpolys = [xs**i * ys**j for i, j in monomials(dk)]
    bpolys = [xs**i * ys**j for i, j in monomials(db)]
    t00 = shifted(template, 0, 0)
    cols = []
    for dy in range(-w, w + 1):
        for dx in range(-w, w + 1):
            if dy == 0 and dx == 0:
                continue
            tk = shifted(template, dy, dx)
            cols.extend((p * (tk - t00)).ravel() for p in kpolys)
    cols.extend((p * t00).ravel() for p in kpolys[: 1 if constant_ratio else len(kpolys)])
    cols.extend(q.ravel() for q in bpolys)
    return np.stack(cols, axis=1)


def normal_equations(
    science: np.ndarray,
    template: np.ndarray,
    omega: np.ndarray,
    w: int,
    dk: int,
    db: int,
    constant_ratio: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(A^T W A, A^T W s, A)`` with W = diag(omega), by explicit matrix products."""
    a = design_matrix(template, w, dk, db, constant_ratio)
    wv = omega.ravel()
    return a.T @ (wv[:, None] * a), a.T @ (wv * science.ravel()), a


def _lanczos(t: np.ndarray, a: int = 3) -> np.ndarray:
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
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Lanczos-3 resampling in whole-array NumPy (the pipeline's former implementation):
    ``(image, variance, noise_power, mask, outside, coverage)``, see
    :func:`orchestrator.dia.pipeline.resample.resample`."""
    a = 3
    ny, nx = image.shape
    out_shape = x_src.shape
    dxdc = np.gradient(x_src, axis=1)
    dxdr = np.gradient(x_src, axis=0)
    dydc = np.gradient(y_src, axis=1)
    dydr = np.gradient(y_src, axis=0)
    det = np.abs(dxdc * dydr - dxdr * dydc)
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
    lost = ~inside | lost_out
    bad_out |= lost
    out[lost] = np.nan
    var_out[lost] = np.nan
    np_out[lost] = np.nan
    return out, var_out, np_out, bad_out, lost, float(inside.mean())


def clipped_stats(
    values: np.ndarray, nsigma: float = 3.0, iterations: int = 5
) -> tuple[float, float]:
    """Median and 1.4826 MAD after iterative sigma clipping, in NumPy (the former
    :func:`orchestrator.dia.pipeline.background.clipped_stats`)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return 0.0, 0.0
    for _ in range(iterations):
        med = float(np.median(v))
        sd = 1.4826 * float(np.median(np.abs(v - med)))
        if sd <= 0:
            break
        keep = np.abs(v - med) < nsigma * sd
        if keep.all():
            break
        v = v[keep]
    med = float(np.median(v))
    return med, 1.4826 * float(np.median(np.abs(v - med)))


def background(image: np.ndarray, mask: np.ndarray, box_px: int = 64) -> np.ndarray:
    """Clipped medians in ``box_px`` cells, 3x3 median-filtered, splined per pixel by
    ``map_coordinates`` (the former :func:`orchestrator.dia.pipeline.background.background`)."""
    from scipy import ndimage

    ny, nx = image.shape
    gy = max(1, round(ny / box_px))
    gx = max(1, round(nx / box_px))
    ey = np.linspace(0, ny, gy + 1).astype(int)
    ex = np.linspace(0, nx, gx + 1).astype(int)
    mesh = np.full((gy, gx), np.nan)
    good = ~mask & np.isfinite(image)
    for i in range(gy):
        for j in range(gx):
            cell = image[ey[i] : ey[i + 1], ex[j] : ex[j + 1]]
            ok = good[ey[i] : ey[i + 1], ex[j] : ex[j + 1]]
            if ok.sum() > 0.3 * ok.size:
                mesh[i, j], _ = clipped_stats(cell[ok])
    if np.all(np.isnan(mesh)):
        return np.zeros_like(image)
    mesh = np.where(np.isnan(mesh), np.nanmedian(mesh), mesh)
    if gy >= 3 and gx >= 3:
        mesh = ndimage.median_filter(mesh, size=3, mode="nearest")
    if gy == 1 and gx == 1:
        return np.full_like(image, mesh[0, 0])
    cy = (ey[:-1] + ey[1:] - 1) / 2
    cx = (ex[:-1] + ex[1:] - 1) / 2
    fy = np.interp(np.arange(ny), cy, np.arange(gy))
    fx = np.interp(np.arange(nx), cx, np.arange(gx))
    order = 3 if min(gy, gx) >= 4 else 1
    yy, xx = np.meshgrid(fy, fx, indexing="ij")
    return ndimage.map_coordinates(mesh, [yy, xx], order=order, mode="nearest")


def inpaint(
    image: np.ndarray, mask: np.ndarray, sigma_px: float = 1.0, rounds: int = 20
) -> np.ndarray:
    """Masked pixels filled with whole-image Gaussian-filtered means of good neighbours, ring by
    ring (the former :func:`orchestrator.dia.pipeline.background.inpaint`)."""
    from scipy import ndimage

    out = np.where(mask, 0.0, image)
    todo = mask.copy()
    good = (~mask).astype(np.float64)
    for _ in range(rounds):
        if not todo.any():
            break
        num = ndimage.gaussian_filter(out * good, sigma_px, mode="nearest")
        den = ndimage.gaussian_filter(good, sigma_px, mode="nearest")
        fill = todo & (den > 1e-3)
        out[fill] = num[fill] / den[fill]
        good[fill] = 1.0
        todo &= ~fill
    if todo.any():
        out[todo] = float(np.median(out[~todo])) if (~todo).any() else 0.0
    return out


def brute_force_normal_matrix(
    template0: np.ndarray, omega: np.ndarray, layout: basis.Layout, *, chunk: int = 2048
) -> np.ndarray:
    """The plain kernel-kernel block as ``sum_x Omega a a^T`` over every pixel whose footprint
    touches the image (``n_pixels n^2`` work): the oracle for ``normal.build_problem``."""
    w = layout.half_width
    n0, n1 = omega.shape
    yy, xx = np.mgrid[-w : n0 + w, -w : n1 + w]
    big = np.zeros((n0 + 2 * w, n1 + 2 * w))
    big[w : w + n0, w : w + n1] = omega
    sel = big.ravel() != 0
    return rank_update(
        np.pad(template0, 2 * w),
        2 * w,
        yy.ravel()[sel],
        xx.ravel()[sel],
        big.ravel()[sel],
        layout,
        omega.shape,
        chunk,
    )
