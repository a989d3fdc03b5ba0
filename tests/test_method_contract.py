"""The method contract and the shared penalty maths (irm_bench.methods, irm_bench.penalties).

Values are hand-computed or come from autograd / torch.func, never from the code tested.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from irm_bench.methods import METHODS, EnvStats, check_study, get_method, methods_for
from irm_bench.methods.contract import hparams_schema
from irm_bench.methods.groupdro import GroupDROHparams
from irm_bench.penalties import (
    fishr_penalty,
    groupdro_weights,
    irmv1_penalty,
    last_layer_grad_variance,
    vrex_penalty,
)


def test_vrex_two_environments_is_squared_risk_difference():
    # (0.3 - 0.5)^2 = 0.04, the Fishr authors' form for two environments.
    assert vrex_penalty(torch.tensor([[0.3, 0.5]])).item() == pytest.approx(0.04)


def test_vrex_three_environments_is_mean_squared_pairwise_difference():
    # pairs: 0.1^2, 0.3^2, 0.2^2 -> mean 0.14 / 3
    got = vrex_penalty(torch.tensor([[0.1, 0.2, 0.4]], dtype=torch.float64))
    assert got.item() == pytest.approx(0.14 / 3, rel=1e-12)
    with pytest.raises(ValueError, match=">= 2 training environments"):
        vrex_penalty(torch.tensor([[0.3]]))


def test_irmv1_penalty_is_mean_of_squared_scale_gradients():
    assert irmv1_penalty(torch.tensor([[0.1, -0.3]])).item() == pytest.approx(0.05)


def test_fishr_penalty_hand_case():
    # v_1 = (1, 2), v_2 = (3, 2): mean (2, 2), sum of squared deviations 1 + 1 = 2.
    v = torch.tensor([[[1.0, 2.0], [3.0, 2.0]]])
    assert fishr_penalty(v).item() == pytest.approx(2.0)


def _per_sample_last_layer_grads(h, y, w, b):
    """Per-example gradients of BCE in (w, b) from torch.func (independent of our code)."""

    def loss(w_, b_, h_i, y_i):
        return F.binary_cross_entropy_with_logits(h_i @ w_ + b_, y_i)

    gw, gb = torch.func.vmap(torch.func.grad(loss, argnums=(0, 1)), in_dims=(None, None, 0, 0))(
        w, b, h, y
    )
    return torch.cat([gw, gb[:, None]], dim=1)


def test_last_layer_grad_variance_matches_torch_func_per_sample_gradients():
    gen = torch.Generator().manual_seed(0)
    n, hdim = 11, 4
    h = torch.rand(n, hdim, generator=gen, dtype=torch.float64)
    y = (torch.rand(n, generator=gen) > 0.5).to(torch.float64)
    w = torch.randn(hdim, generator=gen, dtype=torch.float64)
    b = torch.tensor(0.3, dtype=torch.float64)
    env = torch.tensor([0] * 5 + [1] * 6)
    grads = _per_sample_last_layer_grads(h, y, w, b)
    expected = torch.stack([grads[env == e].var(0, unbiased=False) for e in (0, 1)])
    weights = torch.stack([(env == e).to(torch.float64) / (env == e).sum() for e in (0, 1)])
    residual = torch.sigmoid(h @ w + b) - y
    got = last_layer_grad_variance(residual[None], h[None], weights[None])[0]
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


def test_fishr_penalty_gradient_matches_finite_differences():
    gen = torch.Generator().manual_seed(1)
    h = torch.rand(1, 9, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    r = torch.randn(1, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    env = torch.tensor([0] * 4 + [1] * 5)
    weights = torch.stack([(env == e).to(torch.float64) / (env == e).sum() for e in (0, 1)])

    def penalty(r_, h_):
        return fishr_penalty(last_layer_grad_variance(r_, h_, weights[None]))

    assert torch.autograd.gradcheck(penalty, (r, h))


def test_groupdro_weights_two_step_hand_case():
    q0 = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    # Step 1, risks (1, 2), eta 0.5: q ∝ (e^0.5, e^1).
    q1 = groupdro_weights(q0, torch.tensor([[1.0, 2.0]], dtype=torch.float64), 0.5)
    z = math.exp(0.5) + math.exp(1.0)
    torch.testing.assert_close(q1, torch.tensor([[math.exp(0.5) / z, math.exp(1.0) / z]]).double())
    # Step 2, risks (2, 1): q ∝ (e^1.5, e^1.5), back to uniform.
    q2 = groupdro_weights(q1, torch.tensor([[2.0, 1.0]], dtype=torch.float64), 0.5)
    torch.testing.assert_close(q2, torch.tensor([[0.5, 0.5]], dtype=torch.float64))


def test_groupdro_objective_carries_its_weights():
    spec = get_method("groupdro")
    hp = GroupDROHparams(eta=0.5)
    risks = torch.tensor([[1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    terms = spec.objective(EnvStats(risks=risks), hp, None)
    z = math.exp(0.5) + math.exp(1.0)
    assert terms.risk_term.item() == pytest.approx((math.exp(0.5) * 1 + math.exp(1.0) * 2) / z)
    assert terms.penalty.item() == 0.0
    # The weights carry no gradient: d(sum q R)/dR = q.
    terms.risk_term.sum().backward()
    torch.testing.assert_close(risks.grad, terms.state)
    with pytest.raises(ValueError, match=r"groupdro\.eta"):
        GroupDROHparams(eta=0.0)


def test_every_gradient_method_objective_returns_one_value_per_model():
    M, E, P = 3, 2, 5
    stats = EnvStats(
        risks=torch.tensor([[0.3, 0.5], [0.2, 0.2], [1.0, 0.0]]),
        scale_grads=torch.zeros(M, E),
        grad_variance=torch.ones(M, E, P),
        param_grads=torch.ones(M, E, P),
    )
    for spec in METHODS.values():
        if spec.objective is None:
            continue
        terms = spec.objective(stats, spec.hparams(), None)
        assert terms.risk_term.shape == terms.penalty.shape == (M,), spec.name
    # Known values: mean risks; V-REx (R1 - R2)^2 per model.
    terms = get_method("vrex").objective(stats, get_method("vrex").hparams(), None)
    torch.testing.assert_close(terms.risk_term, torch.tensor([0.4, 0.2, 0.5]))
    torch.testing.assert_close(terms.penalty, torch.tensor([0.04, 0.0, 1.0]))


def test_a_method_that_cannot_run_in_a_study_is_named_in_the_error():
    assert "icp" not in methods_for("cmnist") and "icp" in methods_for("sem")
    with pytest.raises(ValueError, match=r"'cmnist.methods\[1\]'.*'icp'.*cmnist study"):
        check_study(get_method("icp"), "cmnist", "cmnist.methods[1]")


def test_hparams_schema_from_dataclass():
    schema = hparams_schema(GroupDROHparams)
    assert schema["additionalProperties"] is False
    eta = schema["properties"]["eta"]
    assert eta["type"] == "number" and eta["default"] == 0.01 and eta["exclusiveMinimum"] == 0
