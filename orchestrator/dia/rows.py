"""Design rows of pixels the fit treats one by one (frame corners, pixels with ``Omega < 1``).

A design row is ``a(x)[k * nt + t] = p_t(x) T0(x - k)`` (see :mod:`orchestrator.dia.normal`).
:func:`rank_update` adds ``sum_x w(x) a(x) a(x)^T`` to the normal matrix exactly (BLAS
``dsyrk``, ``|E| n^2`` flops: 0.05 s per 1,000 rows at w = 9, DK = 2 on two cores).
:class:`ExcludedRows` applies the same sum to a vector without forming it (``|E| n`` work per
product), which the fit uses when many pixels are left out: a whole 4088^2 frame with masks
around every hot pixel and saturated star has 10^5 of them, 6-10 s as rank-one updates.
Its two kernels may reorder their sums (``fastmath`` reassociation, so that the dot products of
a pixel's 361-pixel footprint vectorise; 2.3x faster): the products then differ from the formed
sum at the 1e-15 level, far below the solve's 1e-12 tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from scipy.linalg import blas

from orchestrator.dia import basis


def design_rows(
    t0p: np.ndarray,
    pad: int,
    rows: np.ndarray,
    cols: np.ndarray,
    layout: basis.Layout,
    shape: tuple[int, int],
) -> np.ndarray:
    """Design rows ``a(x)[k * nt + t] = p_t(x) T0(x - k)`` of pixels ``(rows, cols)`` (image
    coordinates, possibly outside it) from the template zero-padded by ``pad >= 2w``."""
    offs = layout.offsets()
    pvals = basis.poly_values(layout.kernel_exps, rows, cols, shape)  # (nt, n)
    r = rows[:, None] - offs[None, :, 0] + pad
    c = cols[:, None] - offs[None, :, 1] + pad
    return np.asarray((t0p[r, c][:, :, None] * pvals.T[:, None, :]).reshape(len(rows), -1))


def rank_update(
    t0p: np.ndarray,
    pad: int,
    rows: np.ndarray,
    cols: np.ndarray,
    weights: np.ndarray,
    layout: basis.Layout,
    shape: tuple[int, int],
    chunk: int = 2048,
) -> np.ndarray:
    """``sum_x weights(x) a(x) a(x)^T`` over the listed pixels, symmetric (BLAS dsyrk in
    chunks; positive and negative weights in separate calls)."""
    nkt = layout.nk * layout.nt
    acc = np.zeros((nkt, nkt), order="F")
    for sign in (1.0, -1.0):
        sel = np.flatnonzero(sign * weights > 0)
        for start in range(0, len(sel), chunk):
            part = sel[start : start + chunk]
            a = design_rows(t0p, pad, rows[part], cols[part], layout, shape)
            a *= np.sqrt(sign * weights[part])[:, None]
            # a is C-ordered (n_rows, n): as a Fortran array it is a^T, and dsyrk with
            # trans=0 gives a^T a without a copy.
            acc = blas.dsyrk(sign, a.T, beta=1.0, c=acc, trans=0, lower=1, overwrite_c=1)
    lower = np.tril(acc)
    del acc
    lower += np.tril(lower, -1).T
    return lower


@numba.njit(cache=True, fastmath=False, inline="always")
def _gather(t0, r, c, w, patch):  # pragma: no cover
    """``patch[jy * side + jx] = T0(r - w + jy, c - w + jx)``, zero outside the image: the
    footprint read forwards, so offset ``k = (dy, dx)`` sits at ``(w - dy, w - dx)``."""
    side = 2 * w + 1
    n0, n1 = t0.shape
    if r >= w and r + w < n0 and c >= w and c + w < n1:
        for jy in range(side):
            row = t0[r - w + jy]
            for jx in range(side):
                patch[jy * side + jx] = row[c - w + jx]
    else:
        for jy in range(side):
            rr = r - w + jy
            for jx in range(side):
                cc = c - w + jx
                inside = rr >= 0 and rr < n0 and cc >= 0 and cc < n1
                patch[jy * side + jx] = t0[rr, cc] if inside else 0.0


@numba.njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def _apply(t0, rows, cols, pvals, coef_r, w, out):  # pragma: no cover
    """``out[e] = a(x_e) . c`` with ``coef_r[t, j]`` the plain coefficients in footprint order
    (see :func:`_gather`): six contiguous dot products per pixel."""
    nk = (2 * w + 1) ** 2
    nt = pvals.shape[1]
    n = rows.shape[0]
    n_chunks = max(1, min(64, n // 256))
    for ch in numba.prange(n_chunks):
        patch = np.empty(nk)
        for e in range(n * ch // n_chunks, n * (ch + 1) // n_chunks):
            _gather(t0, rows[e], cols[e], w, patch)
            acc = 0.0
            for t in range(nt):
                s = 0.0
                for j in range(nk):
                    s += coef_r[t, j] * patch[j]
                acc += pvals[e, t] * s
            out[e] = acc


@numba.njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def _apply_t(t0, rows, cols, pvals, u, w, n_chunks, out_r):  # pragma: no cover
    """``out_r[t, j] = sum_e u[e] p_t(x_e) patch_e[j]`` (footprint order): contiguous chunks of
    pixels, one per thread, each summed into its own slice, then added up."""
    nk = (2 * w + 1) ** 2
    nt = pvals.shape[1]
    n = rows.shape[0]
    partial = np.zeros((n_chunks, nt, nk))
    for ch in numba.prange(n_chunks):
        patch = np.empty(nk)
        acc = partial[ch]
        for e in range(n * ch // n_chunks, n * (ch + 1) // n_chunks):
            _gather(t0, rows[e], cols[e], w, patch)
            for t in range(nt):
                v = u[e] * pvals[e, t]
                for j in range(nk):
                    acc[t, j] += v * patch[j]
    for ch in range(n_chunks):
        for t in range(nt):
            for j in range(nk):
                out_r[t, j] += partial[ch, t, j]


@numba.njit(parallel=True, cache=True, fastmath=False)
def footprint_energy(t0, rows, cols, w):  # pragma: no cover
    """``sum T0^2`` over each listed pixel's ``(2w + 1)^2`` footprint (zero outside the image):
    a design row's squared norm up to the polynomial factor (it ranks the rows). At the listed
    pixels only: for 1.3x10^5 of them on a 4007^2 frame 0.16 s even at random positions,
    against 0.32 s for a whole-image box filter (``scipy.ndimage.uniform_filter``)."""
    side = 2 * w + 1
    out = np.empty(rows.shape[0])
    for e in numba.prange(rows.shape[0]):
        patch = np.empty(side * side)
        _gather(t0, rows[e], cols[e], w, patch)
        acc = 0.0
        for j in range(side * side):
            acc += patch[j] * patch[j]
        out[e] = acc
    return out


@dataclass
class ExcludedRows:
    """``G = sum_e w_e a(x_e) a(x_e)^T`` over pixels ``(rows, cols)`` as an operator on plain
    kernel-coefficient vectors (``nk * nt`` long), never formed."""

    template0: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    weights: np.ndarray
    layout: basis.Layout

    def __post_init__(self) -> None:
        self.rows = np.ascontiguousarray(self.rows, dtype=np.int64)
        self.cols = np.ascontiguousarray(self.cols, dtype=np.int64)
        self.weights = np.ascontiguousarray(self.weights, dtype=np.float64)
        shape = (int(self.template0.shape[0]), int(self.template0.shape[1]))
        pv = basis.poly_values(self.layout.kernel_exps, self.rows, self.cols, shape)
        self._pvals = np.ascontiguousarray(pv.T)  # (n_rows, nt)
        self._t0 = np.ascontiguousarray(self.template0, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.rows)

    def apply(self, coef: np.ndarray) -> np.ndarray:
        """``a(x_e) . coef`` for every pixel (``coef`` a plain kernel vector, ``nk * nt``)."""
        lay = self.layout
        # offset k = (dy, dx) at footprint index (w - dy, w - dx): the flat order reversed
        coef_r = np.ascontiguousarray(coef.reshape(lay.nk, lay.nt)[::-1].T, dtype=np.float64)
        values = np.empty(len(self.rows))
        _apply(self._t0, self.rows, self.cols, self._pvals, coef_r, lay.half_width, values)
        return values

    def apply_t(self, values: np.ndarray) -> np.ndarray:
        """``sum_e values[e] a(x_e)`` (a plain kernel vector, ``nk * nt``)."""
        lay = self.layout
        out_r = np.zeros((lay.nt, lay.nk))
        chunks = max(1, min(numba.get_num_threads() * 4, len(self.rows) // 256))
        u = np.ascontiguousarray(values, dtype=np.float64)
        _apply_t(self._t0, self.rows, self.cols, self._pvals, u, lay.half_width, chunks, out_r)
        return np.ascontiguousarray(out_r.T[::-1]).ravel()

    def matvec(self, coef: np.ndarray) -> np.ndarray:
        """``G @ coef`` for a plain kernel vector (``nk * nt``)."""
        return self.apply_t(self.weights * self.apply(coef))

    def joined(self, other: ExcludedRows) -> ExcludedRows:
        """The rows of both (weights added where a pixel is in both)."""
        return ExcludedRows(
            self.template0,
            np.concatenate([self.rows, other.rows]),
            np.concatenate([self.cols, other.cols]),
            np.concatenate([self.weights, other.weights]),
            self.layout,
        )
