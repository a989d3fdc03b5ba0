"""Per-environment second moments: everything a linear least-squares method needs.

The squared error of a linear predictor ``x . beta`` on environment ``e`` is

    MSE_e(beta) = beta' (X'X/n) beta - 2 beta' (X'y/n) + y'y/n,

so ERM, ICP's invariance tests (residual means and variances) and the IRMv1 objective
and its gradient are all functions of ``X'X/n``, ``X'y/n``, ``y'y/n`` and the means.
Holding these per environment lets every fit of the SEM study run without the samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ROWS = ("all", "even", "odd")


@dataclass(frozen=True, eq=False)
class LinearMoments:
    """Second moments of ``(x, y)`` per environment, float64.

    Shapes use ``...`` for any leading batch axes (e.g. draws), ``E`` environments and
    ``d`` features.

    Attributes
    ----------
    n
        ``(E,)`` samples per environment.
    xx
        ``(..., E, d, d)`` ``X'X / n``.
    xy
        ``(..., E, d)`` ``X'y / n``.
    yy
        ``(..., E)`` ``y'y / n``.
    x_mean
        ``(..., E, d)`` feature means.
    y_mean
        ``(..., E)`` target means.
    zzxx
        ``(..., E, d+1, d+1, d, d)`` fourth moments ``mean z_k z_l x_m x_n`` with
        ``z = (x, y)``, or ``None`` (not computed). They give the per-environment variance
        of per-example gradients of the squared error (Fishr), exactly.
    """

    n: np.ndarray
    xx: np.ndarray
    xy: np.ndarray
    yy: np.ndarray
    x_mean: np.ndarray
    y_mean: np.ndarray
    zzxx: np.ndarray | None = None

    @classmethod
    def from_samples(
        cls,
        environments: Sequence[tuple[np.ndarray, np.ndarray]],
        rows: str = "all",
        fourth: bool = False,
    ) -> LinearMoments:
        """Moments of each ``(inputs (n, d), target (n,))`` pair.

        ``rows`` picks the samples used: ``all``, or the ``even`` / ``odd`` indexed ones
        (the two halves of the split-batch IRMv1 penalty estimator). ``fourth`` also
        computes :attr:`zzxx` (``n (d+1)^2 d^2`` flops per environment).
        """
        if rows not in ROWS:
            raise ValueError(f"rows must be one of {ROWS}, found {rows!r}")
        start, step = {"all": (0, 1), "even": (0, 2), "odd": (1, 2)}[rows]
        parts = []
        for inputs, target in environments:
            x = np.asarray(inputs, dtype=np.float64)[start::step]
            y = np.asarray(target, dtype=np.float64)[start::step]
            n = x.shape[0]
            parts.append((n, x.T @ x / n, x.T @ y / n, y @ y / n, x.mean(0), y.mean()))
        n, xx, xy, yy, xm, ym = (np.array(col) for col in zip(*parts, strict=True))
        zzxx = None
        if fourth:
            zzxx = np.stack(
                [_fourth_moments(x[start::step], y[start::step]) for x, y in environments]
            )
        return cls(n=n, xx=xx, xy=xy, yy=yy, x_mean=xm, y_mean=ym, zzxx=zzxx)

    @classmethod
    def stack(cls, items: Sequence[LinearMoments]) -> LinearMoments:
        """Stack moments of the same environments along a new leading (batch) axis."""
        n = items[0].n
        if any(not np.array_equal(m.n, n) for m in items):
            raise ValueError("cannot stack moments with different sample counts")
        return cls(
            n=n,
            xx=np.stack([m.xx for m in items]),
            xy=np.stack([m.xy for m in items]),
            yy=np.stack([m.yy for m in items]),
            x_mean=np.stack([m.x_mean for m in items]),
            y_mean=np.stack([m.y_mean for m in items]),
            zzxx=None if any(m.zzxx is None for m in items) else np.stack([m.zzxx for m in items]),
        )

    @property
    def n_envs(self) -> int:
        """Number of environments ``E``."""
        return int(self.n.shape[-1])

    def envs(self, index: Sequence[int] | slice) -> LinearMoments:
        """The moments of a subset of environments (same order as ``index``)."""
        return LinearMoments(
            n=self.n[index],
            xx=self.xx[..., index, :, :],
            xy=self.xy[..., index, :],
            yy=self.yy[..., index],
            x_mean=self.x_mean[..., index, :],
            y_mean=self.y_mean[..., index],
            zzxx=None if self.zzxx is None else self.zzxx[..., index, :, :, :, :],
        )

    def pooled(self) -> LinearMoments:
        """Moments of all environments' samples pooled into one (``E = 1``)."""
        w = self.n / self.n.sum()

        def pool(a: np.ndarray, axis: int) -> np.ndarray:
            shape = [1] * a.ndim
            shape[axis] = -1
            return (a * w.reshape(shape)).sum(axis=axis, keepdims=True)

        return LinearMoments(
            n=self.n.sum(keepdims=True),
            xx=pool(self.xx, -3),
            xy=pool(self.xy, -2),
            yy=pool(self.yy, -1),
            x_mean=pool(self.x_mean, -2),
            y_mean=pool(self.y_mean, -1),
            zzxx=None if self.zzxx is None else pool(self.zzxx, -5),
        )

    def mse(self, coefficients: np.ndarray) -> np.ndarray:
        """Mean squared error of ``x . beta`` per environment, for ``G`` vectors per batch.

        ``coefficients``: ``(..., G, d)`` with the same leading axes as the moments;
        returns ``(..., G, E)``.
        """
        b = np.asarray(coefficients, dtype=np.float64)
        quad = np.einsum("...gi,...eij,...gj->...ge", b, self.xx, b)
        lin = np.einsum("...gi,...ei->...ge", b, self.xy)
        return quad - 2 * lin + self.yy[..., None, :]


def _fourth_moments(inputs: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``mean_i z_ik z_il x_im x_in`` with ``z = (x, y)``: ``(d+1, d+1, d, d)``, float64."""
    x = np.asarray(inputs, dtype=np.float64)
    z = np.column_stack([x, np.asarray(target, dtype=np.float64)])
    n, d = x.shape
    zz = (z[:, :, None] * z[:, None, :]).reshape(n, -1)
    xx = (x[:, :, None] * x[:, None, :]).reshape(n, -1)
    return (zz.T @ xx / n).reshape(d + 1, d + 1, d, d)
