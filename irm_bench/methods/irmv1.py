"""IRMv1 (Arjovsky et al. 2019, arXiv:1907.02893, Section 3.1, eq. IRMv1).

Step objective: ``mean_e R_e + lambda_t * mean_e g_e^2`` with ``g_e`` the gradient of
environment e's risk with respect to a dummy scale on the model's output, at 1. The
linear SEM study trains it with its own closed-form batched trainer
(:mod:`irm_bench.methods.irm_linear`, the reference SEM protocol).
"""

from __future__ import annotations

from irm_bench.methods.contract import EnvStats, MethodSpec, NoHparams, ObjectiveTerms
from irm_bench.methods.irm_linear import LinearIRMv1
from irm_bench.penalties import irmv1_penalty


def irmv1_objective(stats: EnvStats, hparams: NoHparams, state: None) -> ObjectiveTerms:
    """Mean training risk and the IRMv1 penalty ``mean_e g_e^2``, each ``(M,)``."""
    penalty = irmv1_penalty(stats.require("scale_grads", "irmv1"))
    return ObjectiveTerms(risk_term=stats.risks.mean(-1), penalty=penalty)


SPEC = MethodSpec(
    name="irmv1",
    label="IRMv1",
    colour="#dd8452",
    studies=frozenset({"sem", "cmnist", "unit_tests"}),
    objective=irmv1_objective,
    needs=frozenset({"scale_grads"}),
    penalised=True,
    linear_fit=LinearIRMv1,
    reference="Arjovsky et al. (2019), arXiv:1907.02893, Section 3.1",
)
