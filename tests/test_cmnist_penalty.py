"""The IRMv1 penalty as the Colored MNIST trainer computes it: closed form, autograd
agreement, per-environment averaging."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from scipy.optimize import brentq

from irm_bench.cmnist.model import PackedEnvs, env_metrics
from irm_bench.cmnist.reference import dummy_scale_grad_autograd, irmv1_penalty_autograd
from irm_bench.penalties import irmv1_penalty

EXPECTED = 0.05683735  # ((sigmoid(2) - 1) * 2)^2, by hand: sigmoid(2) = 0.8807971


def _packed(labels: list[list[float]]) -> PackedEnvs:
    """One restart, one colour group holding every sample, one environment per list."""
    sizes = [len(y) for y in labels]
    n = sum(sizes)
    w = torch.zeros(1, len(labels), 2, n, dtype=torch.float64)
    start = 0
    for e, k in enumerate(sizes):
        w[0, e, 0, start : start + k] = 1.0 / k
        start += k
    y = torch.zeros(1, 2, n, dtype=torch.float64)
    y[0, 0] = torch.tensor([v for env in labels for v in env], dtype=torch.float64)
    return PackedEnvs(
        x=torch.zeros(1, 2, n, 1), labels=y, weights=w, env_names=(), sizes=(tuple(sizes),)
    )


def _logits(values: list[float]) -> torch.Tensor:
    f = torch.zeros(1, 2, len(values), dtype=torch.float64)
    f[0, 0] = torch.tensor(values, dtype=torch.float64)
    return f


def test_closed_form_value():
    m = env_metrics(_logits([2.0]), _packed([[1.0]]))
    assert m.penalty.item() == pytest.approx(EXPECTED, rel=1e-6)
    assert ((1 / (1 + math.exp(-2)) - 1) * 2) ** 2 == pytest.approx(EXPECTED, rel=1e-6)


def test_closed_form_agrees_with_autograd_in_value_and_gradient():
    f, y = torch.tensor([2.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    assert irmv1_penalty_autograd(f, y).item() == pytest.approx(EXPECTED, rel=1e-6)
    gen = torch.Generator().manual_seed(0)
    f = torch.randn(100, generator=gen, dtype=torch.float64, requires_grad=True)
    y = (torch.rand(100, generator=gen) < 0.5).double()
    packed = _packed([y.tolist()])
    logits = torch.zeros(1, 2, 100, dtype=torch.float64).index_put((torch.tensor([0]),), f[None])
    closed = env_metrics(logits, packed).penalty[0, 0]
    auto = irmv1_penalty_autograd(f, y)
    assert closed.item() == pytest.approx(auto.item(), rel=1e-12)
    # gradients wrt the logits agree too (the autograd one needs a double backward)
    (g_closed,) = torch.autograd.grad(closed, f)
    (g_auto,) = torch.autograd.grad(auto, f)
    torch.testing.assert_close(g_closed, g_auto)


def test_scaling_labels_instead_of_logits_differs():
    f, y = torch.tensor([2.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    s = torch.ones((), dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(F.binary_cross_entropy_with_logits(f, y * s), [s])
    assert g.item() ** 2 == pytest.approx(4.0)  # d/ds [-s y f] = -y f = -2
    assert abs(g.item() ** 2 - EXPECTED) > 1.0


def test_per_environment_average_not_pooled():
    """Environments with dummy-scale gradients +a and -a give a², pooled data 0."""
    f_a = torch.tensor([2.0], dtype=torch.float64)
    a = -dummy_scale_grad_autograd(f_a, torch.tensor([1.0], dtype=torch.float64)).item()
    t = brentq(lambda x: x / (1 + math.exp(-x)) - a, 0.0, 5.0, xtol=1e-15)  # env B: +a
    per_env = env_metrics(_logits([2.0, t]), _packed([[1.0], [0.0]]))
    torch.testing.assert_close(per_env.scale_grad[0], torch.tensor([-a, a], dtype=torch.float64))
    assert irmv1_penalty(per_env.scale_grad).item() == pytest.approx(a**2, rel=1e-9)
    pooled = env_metrics(_logits([2.0, t]), _packed([[1.0, 0.0]]))
    assert irmv1_penalty(pooled.scale_grad).item() == pytest.approx(0.0, abs=1e-15)
