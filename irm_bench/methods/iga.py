"""IGA, inter-environmental gradient alignment (Koyama & Yamaguchi 2020, arXiv:2008.01883).

Step objective ``mean_e R_e + lambda * sum_e || g_e - mean_e' g_e' ||^2`` with ``g_e``
the gradient of environment e's risk in all model parameters (for the unit tests' linear
model: weights and bias), as the unit-test authors code it (facebookresearch/
InvarianceUnitTests, ``scripts/models.py``, ``IGA``; their ``penalty`` is λ).
"""

from __future__ import annotations

import torch

from irm_bench.methods.contract import EnvStats, MethodSpec, NoHparams, ObjectiveTerms


def iga_penalty(param_grads: torch.Tensor) -> torch.Tensor:
    """``sum_e || g_e - mean_e' g_e' ||^2`` of ``(M, E, P)`` gradients; returns ``(M,)``."""
    centred = param_grads - param_grads.mean(dim=1, keepdim=True)
    return centred.square().sum(dim=(1, 2))


def iga_objective(stats: EnvStats, hparams: NoHparams, state: None) -> ObjectiveTerms:
    """Mean training risk and the IGA penalty, each ``(M,)``."""
    penalty = iga_penalty(stats.require("param_grads", "iga"))
    return ObjectiveTerms(risk_term=stats.risks.mean(-1), penalty=penalty)


SPEC = MethodSpec(
    name="iga",
    label="IGA",
    colour="#da8bc3",
    studies=frozenset({"unit_tests"}),
    objective=iga_objective,
    needs=frozenset({"param_grads"}),
    penalised=True,
    reference="Koyama & Yamaguchi (2020), arXiv:2008.01883; Aubin et al. (2021) code",
)
