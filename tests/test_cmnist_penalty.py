"""The IRMv1 penalty: closed form, autograd agreement, per-environment averaging."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from scipy.optimize import brentq

from irm_bench.cmnist.penalties import (
    dummy_scale_grad,
    irmv1_penalty,
    irmv1_penalty_autograd,
    mean_penalty_over_envs,
)

EXPECTED = 0.05683735  # ((sigmoid(2) - 1) * 2)^2, by hand: sigmoid(2) = 0.8807971


def test_closed_form_value():
    f, y = torch.tensor([2.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    assert irmv1_penalty(f, y).item() == pytest.approx(EXPECTED, rel=1e-6)
    assert ((1 / (1 + math.exp(-2)) - 1) * 2) ** 2 == pytest.approx(EXPECTED, rel=1e-6)


def test_autograd_version_agrees():
    f, y = torch.tensor([2.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    assert irmv1_penalty_autograd(f, y).item() == pytest.approx(EXPECTED, rel=1e-6)
    gen = torch.Generator().manual_seed(0)
    f = torch.randn(100, generator=gen, dtype=torch.float64, requires_grad=True)
    y = (torch.rand(100, generator=gen) < 0.5).double()
    closed, auto = irmv1_penalty(f, y), irmv1_penalty_autograd(f, y)
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
    f_a, y_a = torch.tensor([2.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    a = -dummy_scale_grad(f_a, y_a).item()  # env A's gradient is -a
    t = brentq(lambda x: x / (1 + math.exp(-x)) - a, 0.0, 5.0, xtol=1e-15)  # env B: +a
    f_b, y_b = torch.tensor([t], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64)
    assert dummy_scale_grad(f_b, y_b).item() == pytest.approx(a, rel=1e-9)
    penalty = mean_penalty_over_envs([f_a, f_b], [y_a, y_b])
    assert penalty.item() == pytest.approx(a**2, rel=1e-9)
    pooled = irmv1_penalty(torch.cat([f_a, f_b]), torch.cat([y_a, y_b]))
    assert pooled.item() == pytest.approx(0.0, abs=1e-15)
