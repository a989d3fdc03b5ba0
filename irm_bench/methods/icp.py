"""Invariant Causal Prediction (Peters, Bühlmann, Meinshausen 2016) from moments.

As the IRM reference code runs it (``InvariantCausalPrediction`` in
``code/experiment_synthetic/models.py``): with all environments pooled, for every
non-empty feature subset ``S``

1. fit least squares without intercept on the pooled samples, ``beta_S``;
2. for each environment ``e``, compare the residuals inside ``e`` with those outside it:
   Welch's t-test on the means (``p_mean``) and a two-sided F-test on the variances
   (``p_var = 2 min(F.sf, F.cdf)`` of ``var_in / var_out`` with ``(n_in-1, n_out-1)``
   degrees of freedom, both variances with ``ddof=1``); ``p_e = 2 min(p_mean, p_var)``;
3. the subset's p-value is ``min_e p_e * E`` (``E`` environments, Bonferroni); the subset
   is accepted when it exceeds ``alpha``.

The estimate is least squares on the intersection of the accepted subsets, and zero
when no subset is accepted or the intersection is empty.

Residual means and variances follow from the moments (``mean = ybar - xbar . beta``,
``mean of squares = y'y/n - 2 beta' X'y/n + beta' X'X/n beta``), so all ``2^d - 1``
subsets of all draws are tested with batched float64 algebra and vectorised
``scipy.stats`` distributions. Residual variances below ``1e-10 * max_e y'y/n`` (exact
fits, up to rounding) count as zero: two zero variances give ``p_var = 1``, and a zero
standard error gives ``p_mean = 1`` for equal means and 0 otherwise, so p-values stay
finite where the reference's tests would return NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from irm_bench.envs.moments import LinearMoments
from irm_bench.methods.base import LinearFit, solve_masked
from irm_bench.methods.contract import MethodSpec

#: Relative threshold under which a residual variance counts as exactly zero.
ZERO_VARIANCE_RTOL = 1e-10


@dataclass(frozen=True)
class ICPConfig:
    """ICP hyper-parameters.

    Attributes
    ----------
    alpha
        Significance level: a subset is accepted when its p-value exceeds ``alpha``.
    draws_per_batch
        Draws tested together (bounds memory: ``draws * 2^d * d^2`` floats).
    """

    alpha: float = 0.05
    draws_per_batch: int = 25

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"ICP alpha must lie in (0, 1), found {self.alpha}")


def all_subsets(dim: int) -> np.ndarray:
    """``(2^dim - 1, dim)`` bool masks of every non-empty feature subset."""
    codes = np.arange(1, 2**dim)
    return ((codes[:, None] >> np.arange(dim)) & 1).astype(bool)


def _welch_pvalue(m1, v1, n1, m2, v2, n2, tol_mean):
    se2 = v1 / n1 + v2 / n2
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (m1 - m2) / np.sqrt(se2)
        df = se2**2 / ((v1 / n1) ** 2 / (n1 - 1) + (v2 / n2) ** 2 / (n2 - 1))
        p = 2 * stats.t.sf(np.abs(t), df)
    degenerate = np.where(np.abs(m1 - m2) <= tol_mean, 1.0, 0.0)
    return np.where(se2 > 0, p, degenerate)


def _f_pvalue(v1, n1, v2, n2):
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = v1 / v2
        p = 2 * np.minimum(stats.f.sf(ratio, n1 - 1, n2 - 1), stats.f.cdf(ratio, n1 - 1, n2 - 1))
    return np.where((v1 == 0) & (v2 == 0), 1.0, p)


def icp_subset_pvalues(moments: LinearMoments, masks: np.ndarray) -> np.ndarray:
    """ICP p-value of every subset for every draw.

    Parameters
    ----------
    moments
        ``(D, E)`` per-environment moments.
    masks
        ``(K, d)`` bool subsets.

    Returns
    -------
    np.ndarray
        ``(D, K)`` subset p-values ``min_e p_e * E`` (may exceed 1, as in the reference).
    """
    n = moments.n.astype(np.float64)
    n_total = n.sum()
    pooled = moments.pooled()
    beta = solve_masked(
        pooled.xx[:, 0], pooled.xy[:, 0], np.broadcast_to(masks, (1, *masks.shape))
    )
    # Residual mean and mean square per (draw, subset, environment).
    mean = moments.y_mean[:, None, :] - np.einsum("dkj,dej->dke", beta, moments.x_mean)
    quad = np.einsum("dki,deij,dkj->dke", beta, moments.xx, beta, optimize=True)
    msq = moments.yy[:, None, :] - 2 * np.einsum("dkj,dej->dke", beta, moments.xy) + quad
    s1, s2 = n * mean, n * msq
    n_out = n_total - n
    s1_out = s1.sum(-1, keepdims=True) - s1
    s2_out = s2.sum(-1, keepdims=True) - s2
    mean_out = s1_out / n_out
    var_in = (s2 - n * mean**2) / (n - 1)
    var_out = (s2_out - n_out * mean_out**2) / (n_out - 1)
    floor = ZERO_VARIANCE_RTOL * moments.yy.max(-1)[:, None, None]
    var_in = np.where(var_in <= floor, 0.0, var_in)
    var_out = np.where(var_out <= floor, 0.0, var_out)
    p_mean = _welch_pvalue(mean, var_in, n, mean_out, var_out, n_out, np.sqrt(floor))
    p_var = _f_pvalue(var_in, n, var_out, n_out)
    p_env = 2 * np.minimum(p_mean, p_var)
    return p_env.min(-1) * moments.n_envs


class ICP:
    """Invariant Causal Prediction, batched over draws (see the module docstring)."""

    name = "icp"

    def __init__(self, config: ICPConfig | None = None) -> None:
        self.config = config or ICPConfig()

    def accepted_intersection(self, moments: LinearMoments) -> tuple[np.ndarray, np.ndarray]:
        """Per draw: whether any subset was accepted ``(D,)`` and the intersection ``(D, d)``."""
        dim = moments.xy.shape[-1]
        masks = all_subsets(dim)
        any_parts, inter_parts = [], []
        step = self.config.draws_per_batch
        for start in range(0, moments.xy.shape[0], step):
            chunk = _draw_slice(moments, slice(start, start + step))
            accepted = icp_subset_pvalues(chunk, masks) > self.config.alpha
            # A feature is in the intersection when no accepted subset lacks it.
            lacking = accepted[:, :, None] & ~masks[None]
            any_parts.append(accepted.any(1))
            inter_parts.append(accepted.any(1)[:, None] & ~lacking.any(1))
        return np.concatenate(any_parts), np.concatenate(inter_parts)

    def fit(
        self,
        moments: LinearMoments,
        halves: tuple[LinearMoments, LinearMoments] | None = None,
    ) -> LinearFit:
        """Fit every draw; zeros where nothing is accepted or the intersection is empty."""
        _, inter = self.accepted_intersection(moments)
        pooled = moments.pooled()
        beta = solve_masked(pooled.xx[:, 0], pooled.xy[:, 0], inter[:, None, :])[:, 0]
        return LinearFit.single(np.where(inter, beta, 0.0))


def _draw_slice(moments: LinearMoments, index: slice) -> LinearMoments:
    return LinearMoments(
        n=moments.n,
        xx=moments.xx[index],
        xy=moments.xy[index],
        yy=moments.yy[index],
        x_mean=moments.x_mean[index],
        y_mean=moments.y_mean[index],
    )


SPEC = MethodSpec(
    name="icp",
    label="ICP",
    colour="#8172b2",
    studies=frozenset({"sem"}),  # a test over feature subsets: linear models only
    hparams=ICPConfig,
    linear_fit=ICP,
    reference="Peters, Bühlmann, Meinshausen (2016), arXiv:1501.01332",
)
