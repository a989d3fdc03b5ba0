"""The batched linear trainer of the unit-test study.

All ``K`` trials (hyper-parameter draws) times ``S`` data seeds of one (task, method) job
train at once: weights ``(K, S, d)`` and biases ``(K, S)``, full batch on each data
seed's training environments ``X (S, E, n, d)``, for the authors' number of iterations
(facebookresearch/InvarianceUnitTests, ``scripts/models.py``). Each step computes the
per-environment statistics the method declares (:class:`~irm_bench.methods.contract.
EnvStats`) in closed form from the loss derivative ``r = dl/df`` of every example
(squared error: ``2 (f - y)``; logistic: ``sigmoid(f) - y``), calls the method's objective
per trial, and composes

    loss = risk_scale * risk_term + penalty_scale * penalty

(``risk_scale = 1``, ``penalty_scale = λ``, except IRMv1's convex mix, see
:mod:`irm_bench.unit_tests.protocol`). Adam (with the authors' L2 ``weight_decay`` added
to the gradient) is elementwise, so one batched Adam with per-model ``lr`` and ``wd``
equals independent ones. On the regression tasks every statistic except Fishr's comes
from per-environment moments (:class:`SquaredLossMoments`), at a cost per step that does
not grow with the number of examples. A method with a gradient rule (ANDMask) steps
``theta <- theta - lr (direction + wd theta)`` instead, as the authors' code.

Shapes: ``K`` trials, ``S`` data seeds, ``M = K S`` models (trial-major), ``E``
environments, ``n`` examples per environment, ``d`` features, ``P = d + 1`` parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from irm_bench.methods.contract import EnvStats, MethodSpec

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class TrialBatch:
    """The ``K`` trials of one job: per-trial optimiser settings and method hparams.

    Attributes
    ----------
    lr, wd
        ``(K,)`` learning rate and L2 weight decay.
    risk_scale, penalty_scale
        ``(K,)`` factors of the risk term and of the penalty in the step loss.
    method_hparams
        ``K`` instances of the method's hyper-parameter dataclass.
    """

    lr: torch.Tensor
    wd: torch.Tensor
    risk_scale: torch.Tensor
    penalty_scale: torch.Tensor
    method_hparams: tuple[Any, ...]

    @property
    def n_trials(self) -> int:
        return int(self.lr.shape[0])


@dataclass
class LinearModels:
    """Stacked linear models: ``weight (K, S, d)``, ``bias (K, S)`` (float32)."""

    weight: torch.Tensor
    bias: torch.Tensor
    diverged: torch.Tensor | None = None  # (K, S) bool, set by training

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Scores ``(K, S, E, n)`` of inputs ``x (S, E, n, d)``."""
        return _forward(self.weight, x) + self.bias[..., None, None]


def _forward(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``einsum("ksd,send->ksen")`` as one batched matmul per data seed (memory laid out
    ``(S, K, E n)``, returned as a ``(K, S, E, n)`` view)."""
    s, e, n, d = x.shape
    out = torch.bmm(weight.transpose(0, 1), x.reshape(s, e * n, d).transpose(1, 2))
    return out.view(s, -1, e, n).transpose(0, 1)


def _contract(a: torch.Tensor, x: torch.Tensor, per_env: bool) -> torch.Tensor:
    """``einsum("ksen,send->ksed")`` (``per_env``) or ``("ksen,send->ksd")`` by bmm."""
    k = a.shape[0]
    s, e, n, d = x.shape
    a = a.transpose(0, 1)  # (S, K, E, n), contiguous when a came from _forward
    if not per_env:
        return torch.bmm(a.reshape(s, k, e * n), x.reshape(s, e * n, d)).transpose(0, 1)
    out = torch.bmm(a.transpose(1, 2).reshape(s * e, k, n), x.reshape(s * e, n, d))
    return out.view(s, e, k, d).permute(2, 0, 1, 3)


def init_models(
    n_trials: int, n_seeds: int, dim: int, generators: list[torch.Generator]
) -> LinearModels:
    """``torch.nn.Linear(dim, 1)``'s default initialisation, ``U(-1/sqrt(d), 1/sqrt(d))``
    for weights and bias, one generator per trial (the same init for all data seeds of a
    trial, as the authors' model seed)."""
    bound = 1.0 / math.sqrt(dim)
    weight, bias = [], []
    for gen in generators[:n_trials]:
        w = torch.empty(dim).uniform_(-bound, bound, generator=gen)
        b = torch.empty(1).uniform_(-bound, bound, generator=gen)
        weight.append(w.expand(n_seeds, dim))
        bias.append(b.expand(n_seeds))
    return LinearModels(torch.stack(weight).clone(), torch.stack(bias).clone())


def example_losses(scores: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Per-example loss: squared error (regression) or logistic loss with logits."""
    if task == "regression":
        return (scores - y).square()
    return torch.nn.functional.softplus(scores) - y * scores


def loss_derivative(scores: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """``dl/df`` per example: ``2 (f - y)`` or ``sigmoid(f) - y``."""
    if task == "regression":
        return 2.0 * (scores - y)
    return torch.sigmoid(scores) - y


def loss_second_derivative(scores: torch.Tensor, task: str) -> torch.Tensor:
    """``d^2 l / df^2`` per example: 2, or ``sigmoid(f) (1 - sigmoid(f))``."""
    if task == "regression":
        return torch.full_like(scores, 2.0)
    p = torch.sigmoid(scores)
    return p * (1 - p)


def _chain_rule_grad(
    spec: MethodSpec,
    trials: TrialBatch,
    theta: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    task: str,
    states: list[Any],
    risk_scale: torch.Tensor,
    penalty_scale: torch.Tensor,
) -> tuple[torch.Tensor, list[Any]]:
    """Gradient ``(K, S, P)`` of the step loss for objectives of risks and scale grads.

    The objective is differentiated by autograd in the ``(M, E)`` statistics only; the
    rest is the chain rule by hand: ``dR_e/dtheta = mean_i r_i (x_i, 1)`` and
    ``d g_e/dtheta = mean_i (r'_i f_i + r_i) (x_i, 1)`` with ``g_e = mean_i r_i f_i``,
    so no autograd graph over the examples is built.
    """
    k, s, p = theta.shape
    d = p - 1
    with torch.no_grad():
        models = LinearModels(theta[..., :d], theta[..., d])
        scores = models.predict(x)
        r = loss_derivative(scores, y, task)
        risks = example_losses(scores, y, task).mean(-1).reshape(k * s, -1)
        scale = (r * scores).mean(-1).reshape(k * s, -1) if "scale_grads" in spec.needs else None
    leaves = [risks.requires_grad_(True)] + ([] if scale is None else [scale.requires_grad_(True)])
    stats = EnvStats(risks=leaves[0], scale_grads=None if scale is None else leaves[1])
    risk_term, penalty, states = _per_trial(spec, stats, trials, s, states)
    loss = risk_scale * risk_term + penalty_scale * penalty
    coefs = torch.autograd.grad(loss.sum(), leaves)
    n = x.shape[-2]
    with torch.no_grad():
        omega = coefs[0].reshape(k, s, -1, 1) / n * r
        if scale is not None:
            curvature = loss_second_derivative(scores, task)
            omega += coefs[1].reshape(k, s, -1, 1) / n * (curvature * scores + r)
        grad_w = _contract(omega, x, per_env=False)
        grad_b = omega.sum(dim=(-1, -2))
    return torch.cat([grad_w, grad_b[..., None]], -1), states


def env_stats(
    models: LinearModels, x: torch.Tensor, y: torch.Tensor, task: str, needs: frozenset[str]
) -> EnvStats:
    """Per-environment statistics of all models, flattened to ``M = K S`` rows.

    ``risks (M, E)`` always; ``scale_grads (M, E) = mean_i r_i f_i`` (IRMv1);
    ``param_grads (M, E, P) = mean_i r_i (x_i, 1)``; ``grad_variance (M, E, P) =
    mean_i r_i^2 (x_i, 1)^2 - param_grads^2`` (Fishr, biased variance).
    """
    scores = models.predict(x)
    k, s, e, _ = scores.shape
    risks = example_losses(scores, y, task).mean(-1)
    out: dict[str, torch.Tensor] = {"risks": risks.reshape(k * s, e)}
    if needs:
        r = loss_derivative(scores, y, task)
        n = x.shape[-2]
        if "scale_grads" in needs:
            out["scale_grads"] = (r * scores).mean(-1).reshape(k * s, e)
        if needs & {"param_grads", "grad_variance"}:
            grads = torch.cat([_contract(r, x, per_env=True) / n, r.mean(-1, keepdim=True)], -1)
            if "param_grads" in needs:
                out["param_grads"] = grads.reshape(k * s, e, -1)
            if "grad_variance" in needs:
                r2 = r.square()
                second = torch.cat(
                    [
                        _contract(r2, x.square(), per_env=True) / n,
                        r2.mean(-1, keepdim=True),
                    ],
                    -1,
                )
                out["grad_variance"] = (second - grads.square()).reshape(k * s, e, -1)
    return EnvStats(**out)


@dataclass(frozen=True)
class SquaredLossMoments:
    """Per-environment moments that fix a linear model's squared-loss statistics.

    With ``u = (x, 1)``: ``uu (S, E, P, P) = mean u u'``, ``uy (S, E, P) = mean u y``,
    ``yy (S, E) = mean y^2``. Then ``R_e = t' uu t - 2 t' uy + yy``, the parameter
    gradient ``2 (uu t - uy)`` and IRMv1's scale gradient ``2 (t' uu t - t' uy)``, at a
    cost independent of the number of examples.
    """

    uu: torch.Tensor
    uy: torch.Tensor
    yy: torch.Tensor

    @classmethod
    def from_data(cls, x: torch.Tensor, y: torch.Tensor) -> SquaredLossMoments:
        """Moments of ``x (S, E, n, d)``, ``y (S, E, n)``."""
        u = torch.cat([x, torch.ones_like(x[..., :1])], -1)
        n = x.shape[-2]
        return cls(
            uu=torch.einsum("senp,senq->sepq", u, u) / n,
            uy=torch.einsum("senp,sen->sep", u, y) / n,
            yy=y.square().mean(-1),
        )

    def stats(self, theta: torch.Tensor, needs: frozenset[str]) -> EnvStats:
        """Statistics of models ``theta (K, S, P)`` flattened to ``M = K S`` rows."""
        k, s, _ = theta.shape
        uu_t = torch.einsum("sepq,ksq->ksep", self.uu, theta)
        t_uu_t = torch.einsum("ksep,ksp->kse", uu_t, theta)
        t_uy = torch.einsum("sep,ksp->kse", self.uy, theta)
        out = {"risks": (t_uu_t - 2 * t_uy + self.yy).reshape(k * s, -1)}
        if "scale_grads" in needs:
            out["scale_grads"] = (2 * (t_uu_t - t_uy)).reshape(k * s, -1)
        if "param_grads" in needs:
            out["param_grads"] = (2 * (uu_t - self.uy)).reshape(k * s, *uu_t.shape[2:])
        return EnvStats(**out)


def uses_moments(spec: MethodSpec, task: str) -> bool:
    """Whether :func:`train` runs ``spec`` on ``task`` from :class:`SquaredLossMoments`."""
    return task == "regression" and spec.needs <= {"scale_grads", "param_grads"}


def _rows(stats: EnvStats, rows: slice) -> EnvStats:
    """The statistics of models ``rows``."""
    return EnvStats(
        **{
            name: (None if getattr(stats, name) is None else getattr(stats, name)[rows])
            for name in ("risks", "scale_grads", "grad_variance", "param_grads")
        }
    )


def _per_trial(spec: MethodSpec, stats: EnvStats, trials: TrialBatch, n_seeds: int, states):
    """Call ``spec.objective`` on each trial's ``S`` rows; returns stacked terms, states."""
    risk_terms, penalties, new_states = [], [], []
    for k, hparams in enumerate(trials.method_hparams):
        rows = slice(k * n_seeds, (k + 1) * n_seeds)
        terms = spec.objective(_rows(stats, rows), hparams, states[k])
        risk_terms.append(terms.risk_term)
        penalties.append(terms.penalty)
        new_states.append(terms.state)
    return torch.stack(risk_terms), torch.stack(penalties), new_states


def train(
    spec: MethodSpec,
    trials: TrialBatch,
    models: LinearModels,
    x: torch.Tensor,
    y: torch.Tensor,
    task: str,
    n_iterations: int,
) -> LinearModels:
    """Train ``models`` in place for ``n_iterations`` full-batch steps; return them.

    Parameters
    ----------
    spec
        The method (objective, ``needs``, optional ``gradient_rule``).
    trials
        The ``K`` trials' settings.
    models
        Initial weights ``(K, S, d)`` and biases ``(K, S)``.
    x, y
        Training data ``(S, E, n, d)`` and targets ``(S, E, n)``.
    task
        ``regression`` or ``classification`` (the task's property).
    n_iterations
        Number of optimiser steps (the authors': 10,000).

    Returns
    -------
    LinearModels
        The trained models, ``diverged (K, S)`` set where parameters became non-finite
        (those models' parameters are frozen at their last finite values).
    """
    k, s, d = models.weight.shape
    lr = trials.lr.to(x.dtype)[:, None, None]
    wd = trials.wd.to(x.dtype)[:, None, None]
    risk_scale = trials.risk_scale.to(x.dtype)[:, None]
    penalty_scale = trials.penalty_scale.to(x.dtype)[:, None]
    theta = torch.cat([models.weight, models.bias[..., None]], -1).clone()
    m_adam = torch.zeros_like(theta)
    v_adam = torch.zeros_like(theta)
    states: list[Any] = [None] * k
    diverged = torch.zeros(k, s, dtype=torch.bool)
    beta1, beta2 = ADAM_BETAS
    rule = spec.gradient_rule
    needs = spec.needs
    # Squared loss: every statistic but Fishr's variances follows from moments.
    moments = SquaredLossMoments.from_data(x, y) if uses_moments(spec, task) else None
    for step in range(1, n_iterations + 1):
        if moments is not None and rule is not None:
            with torch.no_grad():
                stats = moments.stats(theta, needs)
                direction = torch.cat(
                    [
                        rule(_rows(stats, slice(i * s, (i + 1) * s)), hp)
                        for i, hp in enumerate(trials.method_hparams)
                    ]
                ).reshape(k, s, d + 1)
                new_theta = theta - lr * (direction + wd * theta)
        elif moments is not None:
            leaf = theta.detach().requires_grad_(True)
            stats = moments.stats(leaf, needs)
            risk_term, penalty, states = _per_trial(spec, stats, trials, s, states)
            loss = risk_scale * risk_term + penalty_scale * penalty
            (grad,) = torch.autograd.grad(loss.sum(), leaf)
        elif rule is not None:
            with torch.no_grad():
                current = LinearModels(theta[..., :d], theta[..., d])
                stats = env_stats(current, x, y, task, needs)
                direction = torch.cat(
                    [
                        rule(_rows(stats, slice(i * s, (i + 1) * s)), hp)
                        for i, hp in enumerate(trials.method_hparams)
                    ]
                ).reshape(k, s, d + 1)
                new_theta = theta - lr * (direction + wd * theta)
        elif needs <= {"scale_grads"}:
            grad, states = _chain_rule_grad(
                spec, trials, theta, x, y, task, states, risk_scale, penalty_scale
            )
        else:
            leaf = theta.detach().requires_grad_(True)
            current = LinearModels(leaf[..., :d], leaf[..., d])
            stats = env_stats(current, x, y, task, needs)
            risk_term, penalty, states = _per_trial(spec, stats, trials, s, states)
            loss = risk_scale * risk_term + penalty_scale * penalty
            (grad,) = torch.autograd.grad(loss.sum(), leaf)
        if rule is None:
            with torch.no_grad():
                grad = grad + wd * theta
                m_adam.mul_(beta1).add_(grad, alpha=1 - beta1)
                v_adam.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step_size = lr / (1 - beta1**step)
                denom = v_adam.sqrt() / math.sqrt(1 - beta2**step) + ADAM_EPS
                new_theta = theta - step_size * m_adam / denom
        bad = ~torch.isfinite(new_theta).all(-1)
        diverged |= bad
        theta = torch.where(diverged[..., None], theta, new_theta).detach()
    return LinearModels(theta[..., :d].clone(), theta[..., d].clone(), diverged)


def errors(models: LinearModels, x: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Per-environment error ``(K, S, E)``: MSE (regression) or the 0-1 error of
    ``[f > 0]`` (classification), as the authors' ``compute_error``."""
    with torch.no_grad():
        scores = models.predict(x)
        if task == "regression":
            return (scores - y).square().mean(-1)
        return ((scores > 0).to(y.dtype) != y).to(y.dtype).mean(-1)
