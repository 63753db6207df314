"""Host-side kernels that build the kernel fit's normal matrix from lag and strip sums.

Shared by both backends (:mod:`orchestrator.dia.cpu` and :mod:`orchestrator.dia.gpu` expose them
as part of their interface): their inputs are small host arrays (lag moments, strip sums,
template lines), so they run in NumPy and Numba whichever backend did the FFTs. Split from
``cpu.py`` (see :mod:`orchestrator.dia.normal` for the mathematics). Compiled with
``cache=True`` and ``fastmath=False`` (the fit is compared to references at 1e-10).
"""

from __future__ import annotations

import numba
import numpy as np


def line_pair_moments(
    lines: np.ndarray, coords: np.ndarray, max_lag: int, n_mom: int
) -> np.ndarray:
    """``out[r1, r2, L + d, a] = sum_u coords[u]^a lines[r1, u] lines[r2, u + d]`` (zero beyond
    the line's ends) for ``|d| <= L``: one matrix product of the moment-weighted lines with
    every shifted copy of the lines."""
    nr, n = lines.shape
    lag = int(max_lag)
    nd = 2 * lag + 1
    weighted = np.stack([lines * coords**a for a in range(n_mom)]).reshape(n_mom * nr, n)
    shifted = np.zeros((nd, nr, n))
    for d in range(-lag, lag + 1):
        lo, hi = max(0, -d), min(n, n - d)
        if hi > lo:
            shifted[d + lag, :, lo:hi] = lines[:, lo + d : hi + d]
    prod = weighted @ shifted.reshape(nd * nr, n).T  # (n_mom * nr, nd * nr)
    return np.ascontiguousarray(prod.reshape(n_mom, nr, nd, nr).transpose(1, 3, 2, 0))


@numba.njit(parallel=True, cache=True, fastmath=False)
def _strip_sums(
    moments, row0, strip_lines, strip_coords, half_width, n_pow, out
):  # pragma: no cover
    """``out[pk, pl, d, a, j] = sum_y c(y)^j moments[y - pl - row0, y - pk - row0, d, a]`` over
    the strip's lines ``y`` (offsets ``pk, pl`` in ``[-w, w]``, stored at ``+ w``)."""
    w = half_width
    side = 2 * w + 1
    nr = moments.shape[0]
    nd = moments.shape[2]
    na = moments.shape[3]
    for q in numba.prange(side * side):
        pk = q // side - w
        pl = q % side - w
        for iy in range(strip_lines.shape[0]):
            y = strip_lines[iy]
            r1 = y - pl - row0
            r2 = y - pk - row0
            if r1 < 0 or r1 >= nr or r2 < 0 or r2 >= nr:
                continue
            c = strip_coords[iy]
            for d in range(nd):
                for a in range(na):
                    m = moments[r1, r2, d, a]
                    if m == 0.0:
                        continue
                    cj = 1.0
                    for j in range(n_pow):
                        out[pk + w, pl + w, d, a, j] += cj * m
                        cj *= c


def strip_sums(
    moments: np.ndarray,
    row0: int,
    strip_lines: np.ndarray,
    strip_coords: np.ndarray,
    half_width: int,
    n_pow: int,
) -> np.ndarray:
    """See :func:`_strip_sums` (host arrays in and out)."""
    side = 2 * half_width + 1
    out = np.zeros((side, side, moments.shape[2], moments.shape[3], n_pow))
    _strip_sums(
        np.ascontiguousarray(moments),
        int(row0),
        np.ascontiguousarray(strip_lines, dtype=np.int64),
        np.ascontiguousarray(strip_coords, dtype=np.float64),
        int(half_width),
        int(n_pow),
        out,
    )
    return out


@numba.njit(cache=True)
def _binomials():  # pragma: no cover
    binom = np.zeros((9, 9))
    for n in range(9):
        binom[n, 0] = 1.0
        for r in range(1, n + 1):
            binom[n, r] = binom[n - 1, r - 1] + (binom[n - 1, r] if r <= n - 1 else 0.0)
    return binom


@numba.njit(parallel=True, cache=True, fastmath=False)
def _assemble_kk(moments, mom_index, kexps, alpha_y, alpha_x, half_width, out):  # pragma: no cover
    """Kernel-kernel block of the plain normal matrix over the whole plane from 2-D lag moments
    ``moments[m, 2w + dy, 2w + dx]`` (see normal.build_problem)."""
    w = half_width
    side = 2 * w + 1
    nk = side * side
    nt = kexps.shape[0]
    binom = _binomials()
    for k in numba.prange(nk):
        ky = k // side - w
        kx = k % side - w
        for lk in range(k, nk):
            ly = lk // side - w
            lx = lk % side - w
            dy = ly - ky + 2 * w
            dx = lx - kx + 2 * w
            sx = alpha_x * lx
            sy = alpha_y * ly
            for t in range(nt):
                for s in range(nt):
                    i = kexps[t, 0] + kexps[s, 0]
                    j = kexps[t, 1] + kexps[s, 1]
                    acc = 0.0
                    for a in range(i + 1):
                        cx = binom[i, a] * sx ** (i - a)
                        for b in range(j + 1):
                            cy = binom[j, b] * sy ** (j - b)
                            acc += cx * cy * moments[mom_index[a, b], dy, dx]
                    out[k * nt + t, lk * nt + s] = acc
                    out[lk * nt + s, k * nt + t] = acc


@numba.njit(parallel=True, cache=True, fastmath=False)
def _assemble_strip(sums, kexps, alpha_line, half_width, horizontal, out):  # pragma: no cover
    """Kernel-kernel block of one strip family from :func:`strip_sums`: along the line the
    polynomial is moved onto the offset with the binomial theorem, across it it was summed."""
    w = half_width
    side = 2 * w + 1
    nk = side * side
    nt = kexps.shape[0]
    line_axis = 0 if horizontal else 1  # exponent along the line: x for rows, y for columns
    binom = _binomials()
    for k in numba.prange(nk):
        ky = k // side - w
        kx = k % side - w
        for lk in range(k, nk):
            ly = lk // side - w
            lx = lk % side - w
            if horizontal:
                pk, pl, qk, ql = ky, ly, kx, lx
            else:
                pk, pl, qk, ql = kx, lx, ky, ly
            d = ql - qk + 2 * w
            sq = alpha_line * ql
            for t in range(nt):
                for s in range(nt):
                    i = kexps[t, line_axis] + kexps[s, line_axis]
                    j = kexps[t, 1 - line_axis] + kexps[s, 1 - line_axis]
                    acc = 0.0
                    for a in range(i + 1):
                        acc += binom[i, a] * sq ** (i - a) * sums[pk + w, pl + w, d, a, j]
                    out[k * nt + t, lk * nt + s] = acc
                    out[lk * nt + s, k * nt + t] = acc


def assemble_kk(
    moments: np.ndarray,
    mom_index: np.ndarray,
    kexps: np.ndarray,
    alpha_y: float,
    alpha_x: float,
    half_width: int,
) -> np.ndarray:
    """Plain kernel-kernel normal block from lag moments (host arrays in, host array out)."""
    nk = (2 * half_width + 1) ** 2
    nt = kexps.shape[0]
    out = np.empty((nk * nt, nk * nt))
    _assemble_kk(moments, mom_index, kexps, float(alpha_y), float(alpha_x), int(half_width), out)
    return out


def assemble_strip(
    sums: np.ndarray, kexps: np.ndarray, alpha_line: float, half_width: int, horizontal: bool
) -> np.ndarray:
    """Plain kernel-kernel block of horizontal (``horizontal``) or vertical strips."""
    nk = (2 * half_width + 1) ** 2
    nt = kexps.shape[0]
    out = np.empty((nk * nt, nk * nt))
    _assemble_strip(
        np.ascontiguousarray(sums),
        np.ascontiguousarray(kexps),
        float(alpha_line),
        int(half_width),
        bool(horizontal),
        out,
    )
    return out
