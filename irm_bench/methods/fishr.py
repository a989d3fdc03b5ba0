"""Fishr: invariant gradient variances (Ramé, Dancette, Cord 2022, arXiv:2109.02934).

Step objective: ``mean_e R_e + lambda_t * sum_e || v_e - mean_e' v_e' ||^2``, where
``v_e`` is the variance over environment e's examples of the per-example gradients of
the loss in the last layer's weights and bias (eq. 4; the authors' Colored MNIST code
takes these gradients on the last linear layer, centred per environment). The trainer
provides ``v_e`` as ``EnvStats.grad_variance``.
"""

from __future__ import annotations

from irm_bench.methods.contract import EnvStats, MethodSpec, NoHparams, ObjectiveTerms
from irm_bench.penalties import fishr_penalty


def fishr_objective(stats: EnvStats, hparams: NoHparams, state: None) -> ObjectiveTerms:
    """Mean training risk and the Fishr penalty, each ``(M,)``."""
    penalty = fishr_penalty(stats.require("grad_variance", "fishr"))
    return ObjectiveTerms(risk_term=stats.risks.mean(-1), penalty=penalty)


SPEC = MethodSpec(
    name="fishr",
    label="Fishr",
    colour="#c44e52",
    studies=frozenset({"sem", "cmnist", "unit_tests"}),
    objective=fishr_objective,
    needs=frozenset({"grad_variance"}),
    penalised=True,
    reference="Ramé, Dancette, Cord (2022), arXiv:2109.02934, eq. 4",
)
