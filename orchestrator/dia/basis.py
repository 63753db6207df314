"""Kernel and polynomial bases of the subtraction model (Bramich 2008; Hu et al. 2022, SFFT).

Model: ``S(x) ~ sum_k K(k; x) T(x - k) + B(x)`` with ``K(k; x) = sum_t c[k, t] p_t(x)``.
Coordinates are scaled to [-1, 1] over the image (``x~ = 2 x / (n - 1) - 1`` per axis) so that
the polynomial terms are of order one everywhere.

Unknowns are solved in SFFT's "modified delta basis": ``B_00 = delta_00`` and
``B_ab = delta_ab - delta_00`` for ``(a, b) != (0, 0)``, which makes the kernel sum the single
coefficient of ``B_00`` (spatially constant when the photometric ratio is constant). Internally
the normal matrix is built in the plain delta basis (``plain = R @ modified``) and transformed.

Indices: kernel offset ``k = (dy, dx)``, ``dy, dx in [-w, w]``, flat index
``(dy + w) * (2w + 1) + dx + w``;
plain unknown ``(k, t)`` sits at ``k * nt + t``, background terms follow at ``nk * nt + b``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def monomial_exponents(order: int) -> np.ndarray:
    """Exponents ``(i, j)`` of ``x~^i y~^j`` with ``i + j <= order``, by total degree."""
    return np.array(
        [(deg - j, j) for deg in range(order + 1) for j in range(deg + 1)], dtype=np.int64
    ).reshape(-1, 2)


def scale(n: int) -> tuple[float, float]:
    """``(alpha, beta)`` with ``x~ = alpha * x + beta`` mapping pixel 0..n-1 onto [-1, 1]."""
    if n <= 1:
        return 1.0, 0.0
    return 2.0 / (n - 1), -1.0


def poly_values(
    exps: np.ndarray, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """Each monomial (x = column, y = row) at the pixels ``(rows, cols)``: (n_terms, n_pix)."""
    ay, by = scale(shape[0])
    ax, bx = scale(shape[1])
    xs = ax * np.asarray(cols, dtype=np.float64) + bx
    ys = ay * np.asarray(rows, dtype=np.float64) + by
    return np.stack([xs**i * ys**j for i, j in exps]) if len(exps) else np.empty((0, xs.size))


def poly_image(i: int, j: int, shape: tuple[int, int]) -> np.ndarray:
    """The monomial ``x~^i y~^j`` evaluated on the whole pixel grid (float64, ``shape``)."""
    ay, by = scale(shape[0])
    ax, bx = scale(shape[1])
    xs = ax * np.arange(shape[1], dtype=np.float64) + bx
    ys = ay * np.arange(shape[0], dtype=np.float64) + by
    return np.outer(ys**j, xs**i)


def moment_kernels(layout: Layout, kernel_terms: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Kernels ``K'_ab`` with ``sum_t p_t(x) (T conv K_t)(x) = sum_ab ((x^a y^b T) conv K'_ab)(x)``
    for ``a + b <= DK`` (order of ``kernel_exps``): ``p_t(x) = p_t(u + k)`` with ``u = x - k``,
    expanded with the binomial theorem, moves the polynomial from the output pixel to the
    template pixel."""
    from math import comb

    w = layout.half_width
    ay, ax = scale(shape[0])[0], scale(shape[1])[0]
    r = np.arange(-w, w + 1, dtype=np.float64)
    sy, sx = (ay * r)[:, None], (ax * r)[None, :]
    exps = layout.kernel_exps
    index = {(int(i), int(j)): m for m, (i, j) in enumerate(exps)}
    out = np.zeros((len(exps), layout.side, layout.side))
    for t, (i, j) in enumerate(exps):
        for a in range(int(i) + 1):
            for b in range(int(j) + 1):
                coef = comb(int(i), a) * comb(int(j), b) * sx ** (i - a) * sy ** (j - b)
                out[index[(a, b)]] += coef * kernel_terms[t]
    return out


@dataclass(frozen=True)
class Layout:
    """Sizes and index maps of one subtraction model."""

    half_width: int
    kernel_order: int
    background_order: int
    constant_ratio: bool

    @property
    def side(self) -> int:
        return 2 * self.half_width + 1

    @property
    def nk(self) -> int:
        return self.side**2

    @property
    def k0(self) -> int:
        return self.nk // 2

    @property
    def kernel_exps(self) -> np.ndarray:
        return monomial_exponents(self.kernel_order)

    @property
    def background_exps(self) -> np.ndarray:
        return monomial_exponents(self.background_order)

    @property
    def nt(self) -> int:
        return len(self.kernel_exps)

    @property
    def nb(self) -> int:
        return len(self.background_exps)

    @property
    def n_plain(self) -> int:
        return self.nk * self.nt + self.nb

    @property
    def n_centre(self) -> int:
        """Spatial terms of the kernel-sum coefficient (1 when the ratio is constant)."""
        return 1 if self.constant_ratio else self.nt

    @property
    def n_unknowns(self) -> int:
        return (self.nk - 1) * self.nt + self.n_centre + self.nb

    def offsets(self) -> np.ndarray:
        """``(nk, 2)`` array of kernel offsets ``(dy, dx)`` in flat order."""
        r = np.arange(-self.half_width, self.half_width + 1)
        dy, dx = np.meshgrid(r, r, indexing="ij")
        return np.stack([dy.ravel(), dx.ravel()], axis=1)

    # --- modified <-> plain delta basis -------------------------------------------------------
    # Modified vector layout: [(k, t) for k != k0, t < nt] + [(k0, t) for t < n_centre] + bg.

    def to_plain(self, mod: np.ndarray) -> np.ndarray:
        """``R @ mod``: plain delta-basis coefficients from modified-basis ones (leading axis)."""
        nk, nt, nc = self.nk, self.nt, self.n_centre
        rest = mod.shape[1:]
        off = mod[: (nk - 1) * nt].reshape(nk - 1, nt, *rest)
        centre = mod[(nk - 1) * nt : (nk - 1) * nt + nc]
        kern = np.zeros((nk, nt, *rest), dtype=mod.dtype)
        kern[: self.k0] = off[: self.k0]
        kern[self.k0 + 1 :] = off[self.k0 :]
        kern[self.k0] = -off.sum(axis=0)
        kern[self.k0, :nc] += centre
        return np.concatenate([kern.reshape(nk * nt, *rest), mod[(nk - 1) * nt + nc :]])

    def to_modified_t(self, plain: np.ndarray) -> np.ndarray:
        """``R.T @ plain`` (leading axis): the transpose of :meth:`to_plain`."""
        nk, nt, nc = self.nk, self.nt, self.n_centre
        rest = plain.shape[1:]
        kern = plain[: nk * nt].reshape(nk, nt, *rest)
        centre_row = kern[self.k0]
        off = np.concatenate([kern[: self.k0], kern[self.k0 + 1 :]]) - centre_row[None]
        return np.concatenate(
            [off.reshape((nk - 1) * nt, *rest), centre_row[:nc], plain[nk * nt :]]
        )

    def modified_matrix(self, plain_matrix: np.ndarray) -> np.ndarray:
        """``R.T @ N @ R`` for a plain-basis normal matrix ``N``."""
        left = self.to_modified_t(plain_matrix)
        return self.to_modified_t(left.T.copy()).T.copy()
