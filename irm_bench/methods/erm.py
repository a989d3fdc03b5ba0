"""Empirical risk minimisation: pooled least squares (SEM) and the mean training risk."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from irm_bench.envs.moments import LinearMoments
from irm_bench.methods.base import LinearFit
from irm_bench.methods.contract import EnvStats, MethodSpec, NoHparams, ObjectiveTerms


@dataclass(frozen=True)
class ERMConfig:
    """ERM has no hyper-parameters (ordinary least squares without intercept)."""


class ERM:
    """Ordinary least squares without intercept on the samples of **all** environments.

    ``beta = (sum_e n_e X_e'X_e/n_e)^-1 (sum_e n_e X_e'y_e/n_e)``: the normal equations of
    the pooled data, as the reference ``EmpiricalRiskMinimizer`` (which pools all three
    environments, the validation one included).
    """

    name = "erm"

    def __init__(self, config: ERMConfig | None = None) -> None:
        self.config = config or ERMConfig()

    def fit(
        self,
        moments: LinearMoments,
        halves: tuple[LinearMoments, LinearMoments] | None = None,
    ) -> LinearFit:
        """Fit every draw; returns a one-point :class:`LinearFit` of shape ``(D, 1, d)``."""
        pooled = moments.pooled()
        beta = np.linalg.solve(pooled.xx[..., 0, :, :], pooled.xy[..., 0, :, None])[..., 0]
        return LinearFit.single(beta)


def erm_objective(stats: EnvStats, hparams: NoHparams, state: None) -> ObjectiveTerms:
    """ERM's step objective: the mean of the training environments' risks, no penalty."""
    risks = stats.risks
    return ObjectiveTerms(risk_term=risks.mean(-1), penalty=torch.zeros_like(risks[..., 0]))


SPEC = MethodSpec(
    name="erm",
    label="ERM",
    colour="#4c72b0",
    studies=frozenset({"sem", "cmnist", "unit_tests"}),
    objective=erm_objective,
    linear_fit=ERM,
    reference="empirical risk minimisation (Vapnik 1992); IRM paper Section 5",
)
