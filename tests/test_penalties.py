"""The IRMv1 penalty estimators and the closed-form gradients, against autograd and
finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from irm_bench.envs.minimal import MinimalExample
from irm_bench.penalties import (
    LinearIRMv1Gradient,
    dummy_scale_penalty,
    get_penalty_estimator,
    linear_irmv1_objective,
    scalar_dummy_penalty_grad,
)

D, E, B = 4, 2, 3


def _moments(gen, batch=B):
    a = torch.randn(E, D, D, batch, generator=gen, dtype=torch.float64)
    xx = torch.einsum("eikb,ejkb->eijb", a, a) / D
    return xx, torch.randn(E, D, batch, generator=gen, dtype=torch.float64)


@pytest.fixture
def problem():
    gen = torch.Generator().manual_seed(0)
    xx, xy = _moments(gen)
    halves = (*_moments(gen), *_moments(gen))
    yy = torch.rand(E, B, generator=gen, dtype=torch.float64) + 5
    reg = torch.tensor([0.0, 1e-3, 0.1], dtype=torch.float64)
    phi = torch.randn(D, D, B, generator=gen, dtype=torch.float64)
    return phi, xx, xy, yy, reg, halves


@pytest.mark.parametrize("split", [False, True])
def test_closed_form_gradient_matches_autograd(problem, split):
    phi, xx, xy, yy, reg, halves = problem
    halves = halves if split else None
    phi_ad = phi.clone().requires_grad_()
    objective = linear_irmv1_objective(phi_ad, xx, xy, yy, reg, 1 - reg, halves)
    (expected,) = torch.autograd.grad(objective.sum(), phi_ad)
    gradient = LinearIRMv1Gradient(xx.clone(), xy.clone(), reg, 1 - reg, halves)
    torch.testing.assert_close(gradient(phi), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("split", [False, True])
def test_closed_form_gradient_matches_finite_differences(problem, split):
    phi, xx, xy, yy, reg, halves = problem
    halves = halves if split else None
    grad = LinearIRMv1Gradient(xx.clone(), xy.clone(), reg, 1 - reg, halves)(phi)
    h = 1e-6
    for i, j, b in [(0, 0, 0), (1, 3, 1), (3, 2, 2)]:
        step = torch.zeros_like(phi)
        step[i, j, b] = h
        plus = linear_irmv1_objective(phi + step, xx, xy, yy, reg, 1 - reg, halves)[b]
        minus = linear_irmv1_objective(phi - step, xx, xy, yy, reg, 1 - reg, halves)[b]
        assert float(grad[i, j, b]) == pytest.approx(float(plus - minus) / (2 * h), rel=1e-6)


def test_moment_objective_equals_raw_sample_irmv1_objective():
    # The reference objective on raw samples: reg * sum MSE + (1-reg) * sum mean_j (dMSE/dw_j)^2.
    gen = torch.Generator().manual_seed(1)
    envs = [
        (torch.randn(50, D, generator=gen, dtype=torch.float64), torch.randn(50, generator=gen))
        for _ in range(E)
    ]
    envs = [(x, y.double()) for x, y in envs]
    phi = torch.randn(D, D, generator=gen, dtype=torch.float64)
    reg = 0.3
    w = torch.ones(D, 1, dtype=torch.float64, requires_grad=True)
    expected = 0.0
    for x, y in envs:
        mse = (x @ phi @ w - y[:, None]).pow(2).mean()
        (g,) = torch.autograd.grad(mse, w)
        mse = mse.detach()
        expected += reg * mse.item() + (1 - reg) * g.pow(2).mean().item()
    xx = torch.stack([x.T @ x / 50 for x, _ in envs])[..., None]
    xy = torch.stack([x.T @ y / 50 for x, y in envs])[..., None]
    yy = torch.stack([y @ y / 50 for _, y in envs])[:, None]
    one = torch.ones(1, dtype=torch.float64)
    value = linear_irmv1_objective(phi[..., None], xx, xy, yy, reg * one, (1 - reg) * one)
    assert float(value[0]) == pytest.approx(expected, rel=1e-12)


def test_scalar_dummy_penalty_matches_autograd_and_finite_differences():
    gen = torch.Generator().manual_seed(2)
    x, y = MinimalExample().sample(101, 1.0, gen)
    x, y = x.double(), y.double()
    phi = torch.tensor([0.9, 1.1, 0.2, -0.1], dtype=torch.float64, requires_grad=True)
    pred = x @ phi
    penalty = dummy_scale_penalty(pred, y, "split")  # rows in the given order
    (expected_grad,) = torch.autograd.grad(penalty, phi)
    penalty = penalty.detach()

    def halves_moments(rows):
        xs, ys = x[rows], y[rows]
        return xs.T @ xs / len(ys), xs.T @ ys / len(ys)

    a, b = halves_moments(slice(0, None, 2)), halves_moments(slice(1, None, 2))
    value, grad = scalar_dummy_penalty_grad(phi.detach(), *a, *b)
    assert float(value) == pytest.approx(penalty.item(), rel=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-12)
    h = 1e-6
    for k in range(4):
        step = torch.zeros(4, dtype=torch.float64)
        step[k] = h
        fd = (
            scalar_dummy_penalty_grad(phi.detach() + step, *a, *b)[0]
            - scalar_dummy_penalty_grad(phi.detach() - step, *a, *b)[0]
        ) / (2 * h)
        assert float(grad[k]) == pytest.approx(float(fd), rel=1e-6)


def test_split_estimator_is_unbiased_where_the_square_is_not():
    # At the invariant phi = (1, 1, 0, 0), f - y = -noise with E[noise * f] = 0, so the true
    # penalty is 0. The squared batch gradient g = -2 mean(noise * f) has
    # E[g^2] = 4 Var(noise * f) / 64 = 4 (2 e^2)(2 e^2) / 64 = 0.25 for e = 1.
    gen = torch.Generator().manual_seed(3)
    x, y = MinimalExample().sample(10_000, 1.0, gen)
    pred = x @ torch.tensor([1.0, 1.0, 0.0, 0.0])
    squared, split = [], []
    for _ in range(1000):
        rows = torch.randint(0, 10_000, (64,), generator=gen)
        squared.append(dummy_scale_penalty(pred[rows], y[rows], "squared").detach().item())
        split.append(dummy_scale_penalty(pred[rows], y[rows], "split").detach().item())
    squared, split = np.array(squared), np.array(split)
    assert squared.mean() == pytest.approx(0.25, rel=0.15)
    assert abs(split.mean()) < 0.05  # ~3 standard errors of the mean
    assert (split < 0).sum() > 200  # never clamped


def test_estimator_lookup_error_lists_names():
    assert get_penalty_estimator("split").first == "even"
    with pytest.raises(KeyError, match=r"did you mean 'squared'.*squared, split"):
        get_penalty_estimator("squard")
