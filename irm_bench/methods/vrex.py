"""V-REx, variance risk extrapolation (Krueger et al. 2021, arXiv:2003.00688, eq. 6).

Step objective: ``mean_e R_e + lambda_t * mean_{e<e'} (R_e - R_e')^2``; for two
training environments the penalty is ``(R_1 - R_2)^2``, as in the Fishr authors'
Colored MNIST code (see :func:`irm_bench.penalties.vrex_penalty`).
"""

from __future__ import annotations

from irm_bench.methods.contract import EnvStats, MethodSpec, NoHparams, ObjectiveTerms
from irm_bench.penalties import vrex_penalty


def vrex_objective(stats: EnvStats, hparams: NoHparams, state: None) -> ObjectiveTerms:
    """Mean training risk and the V-REx penalty, each ``(M,)``."""
    return ObjectiveTerms(risk_term=stats.risks.mean(-1), penalty=vrex_penalty(stats.risks))


SPEC = MethodSpec(
    name="vrex",
    label="V-REx",
    colour="#55a868",
    studies=frozenset({"sem", "cmnist", "unit_tests"}),
    objective=vrex_objective,
    penalised=True,
    reference="Krueger et al. (2021), arXiv:2003.00688, eq. 6",
)
