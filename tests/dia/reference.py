"""Slow, obvious reference implementations: the oracle for the fast DIA kernels."""

from __future__ import annotations

import numpy as np


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
            for p in kpolys:
                cols.append((p * (tk - t00)).ravel())
    for p in kpolys[: 1 if constant_ratio else len(kpolys)]:
        cols.append((p * t00).ravel())
    for q in bpolys:
        cols.append(q.ravel())
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
