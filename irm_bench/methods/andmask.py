"""ANDMask (Parascandolo et al. 2021, arXiv:2009.00329), as the unit-test authors code it.

A gradient rule, not a penalty: per environment e, the gradient ``g_e`` of its risk in
the linear model's parameters, with the weight block divided by its Euclidean norm (the
bias is left as is); a coordinate is kept where the environments' signs agree,
``|sum_e sign(g_e)| > E tau``; the direction is ``mask * mean_e g_e``. The trainer then
steps ``theta <- theta - lr (direction + wd theta)`` (facebookresearch/
InvarianceUnitTests, ``scripts/models.py``, ``AndMask.mask_step``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from irm_bench.methods.contract import EnvStats, MethodSpec, ObjectiveTerms


@dataclass(frozen=True)
class ANDMaskHparams:
    """ANDMask's agreement threshold ``tau`` in (0, 1] (the authors' default 0.9)."""

    tau: float = field(
        default=0.9,
        metadata={"exclusiveMinimum": 0, "maximum": 1, "description": "sign agreement threshold"},
    )

    def __post_init__(self) -> None:
        if not (isinstance(self.tau, int | float) and 0 < self.tau <= 1):
            raise ValueError(f"andmask.tau must be a number in (0, 1], found {self.tau!r}")


def andmask_objective(stats: EnvStats, hparams: ANDMaskHparams, state: None) -> ObjectiveTerms:
    """The mean training risk (reported; the update comes from :func:`andmask_direction`)."""
    risks = stats.risks
    return ObjectiveTerms(risk_term=risks.mean(-1), penalty=torch.zeros_like(risks[..., 0]))


def andmask_direction(stats: EnvStats, hparams: ANDMaskHparams) -> torch.Tensor:
    """Masked mean gradient ``(M, P)`` from ``param_grads`` ``(M, E, P)`` (weights, bias).

    ``g_e[:P-1] / ||g_e[:P-1]||`` (weights normalised per environment), mask
    ``|sum_e sign(g_e)| > E tau`` (strict, as the reference), direction
    ``mask * mean_e g_e``. Computed without gradient.
    """
    grads = stats.require("param_grads", "andmask").detach()
    weights = grads[..., :-1]
    weights = weights / weights.norm(dim=-1, keepdim=True)
    grads = torch.cat([weights, grads[..., -1:]], dim=-1)
    n_envs = grads.shape[1]
    mask = grads.sign().sum(dim=1).abs() > n_envs * hparams.tau
    return mask.to(grads.dtype) * grads.mean(dim=1)


SPEC = MethodSpec(
    name="andmask",
    label="ANDMask",
    colour="#8172b3",
    studies=frozenset({"unit_tests"}),
    hparams=ANDMaskHparams,
    objective=andmask_objective,
    needs=frozenset({"param_grads"}),
    gradient_rule=andmask_direction,
    reference="Parascandolo et al. (2021), arXiv:2009.00329; Aubin et al. (2021) code",
)
