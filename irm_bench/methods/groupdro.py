"""GroupDRO with online group weights (Sagawa et al. 2020, arXiv:1911.08731, Alg. 1).

Each step first updates the weights ``q_e <- q_e exp(eta R_e)`` (normalised, no
gradient through them; ``q`` starts uniform), then minimises ``sum_e q_e R_e``. There
is no penalty term, so the study's penalty weight λ does not apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from irm_bench.methods.contract import EnvStats, MethodSpec, ObjectiveTerms, positive
from irm_bench.penalties import groupdro_weights


@dataclass(frozen=True)
class GroupDROHparams:
    """GroupDRO's step size ``eta`` of the group weights (DomainBed's default 0.01)."""

    eta: float = field(default=0.01, metadata=positive("step size of the group weights"))

    def __post_init__(self) -> None:
        if not (isinstance(self.eta, int | float) and self.eta > 0):
            raise ValueError(f"groupdro.eta must be a number > 0, found {self.eta!r}")


def groupdro_objective(
    stats: EnvStats, hparams: GroupDROHparams, state: torch.Tensor | None
) -> ObjectiveTerms:
    """``sum_e q_e R_e`` after one weight update; ``state`` is ``q`` of shape ``(M, E)``."""
    risks = stats.risks
    if state is None:
        state = torch.full_like(risks.detach(), 1.0 / risks.shape[-1])
    q = groupdro_weights(state, risks, hparams.eta)
    return ObjectiveTerms(
        risk_term=(q * risks).sum(-1), penalty=torch.zeros_like(risks[..., 0]), state=q
    )


SPEC = MethodSpec(
    name="groupdro",
    label="GroupDRO",
    colour="#937860",
    studies=frozenset({"sem", "cmnist", "unit_tests"}),
    hparams=GroupDROHparams,
    objective=groupdro_objective,
    reference="Sagawa et al. (2020), arXiv:1911.08731, Algorithm 1",
)
