"""The straightforward one-model loop: a reference for tests and the speed benchmark.

One ``torch.nn.Linear`` trained with ``torch.optim.Adam`` (or, for ANDMask, the plain
masked step), every statistic by autograd: IRMv1's scale gradient through a dummy
multiplier, IGA's and ANDMask's per-environment gradients by ``torch.autograd.grad``,
Fishr's per-example gradients by ``torch.func``. It shares no statistic code with
:mod:`irm_bench.unit_tests.trainer`, which it checks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.func import functional_call, grad, vmap

from irm_bench.penalties import fishr_penalty, groupdro_weights, vrex_penalty


def _loss_fn(task: str):
    if task == "regression":
        return torch.nn.MSELoss()
    return torch.nn.BCEWithLogitsLoss()


def train_one(
    method: str,
    hparams: dict[str, Any],
    weight: torch.Tensor,
    bias: float,
    envs: list[tuple[torch.Tensor, torch.Tensor]],
    task: str,
    n_iterations: int,
) -> torch.nn.Linear:
    """Train one linear model from ``weight (d,)``, ``bias`` on ``envs`` [(x (n, d), y (n,))].

    ``hparams``: ``lr``, ``wd`` and the method's own (``risk_scale``/``penalty_scale``
    for penalised methods, ``tau`` for ANDMask, ``eta`` for GroupDRO).
    """
    model = torch.nn.Linear(weight.shape[0], 1).to(weight.dtype)
    with torch.no_grad():
        model.weight.copy_(weight[None])
        model.bias.fill_(bias)
    loss_fn = _loss_fn(task)
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=hparams["lr"], weight_decay=hparams["wd"])
    q = torch.full((len(envs),), 1.0 / len(envs), dtype=weight.dtype)
    for _ in range(n_iterations):
        if method == "andmask":
            _andmask_step(model, envs, loss_fn, hparams)
            continue
        scale = torch.ones(1, dtype=weight.dtype, requires_grad=True)
        risks = torch.stack([loss_fn(model(x)[:, 0] * scale, y) for x, y in envs])
        risk, penalty = risks.mean(), torch.zeros(())
        if method == "irmv1":
            g = torch.stack([torch.autograd.grad(r, scale, create_graph=True)[0] for r in risks])
            penalty = g.square().mean()
        elif method == "vrex":
            penalty = vrex_penalty(risks[None])[0]
        elif method == "iga":
            g = [torch.cat([t.flatten() for t in _env_grads(r, params)]) for r in risks]
            g = torch.stack(g)
            penalty = (g - g.mean(0)).square().sum()
        elif method == "fishr":
            penalty = fishr_penalty(_fishr_variances(model, envs, task)[None])[0]
        elif method == "groupdro":
            q = groupdro_weights(q[None], risks[None], hparams["eta"])[0]
            risk = (q * risks).sum()
        loss = hparams.get("risk_scale", 1.0) * risk + hparams.get("penalty_scale", 0.0) * penalty
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def _env_grads(risk: torch.Tensor, params: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(risk, params, create_graph=True)


def _fishr_variances(model: torch.nn.Linear, envs, task: str) -> torch.Tensor:
    """``(E, P)`` per-environment variances of per-example gradients (weights, bias)."""
    params = {k: v for k, v in model.named_parameters()}

    def example_loss(p, x, y):
        score = functional_call(model, p, (x[None],))[0, 0]
        if task == "regression":
            return (score - y) ** 2
        return torch.nn.functional.binary_cross_entropy_with_logits(score, y)

    out = []
    for x, y in envs:
        g = vmap(grad(example_loss), in_dims=(None, 0, 0))(params, x, y)
        flat = torch.cat([g["weight"].flatten(1), g["bias"].flatten(1)], 1)
        out.append(flat.var(0, unbiased=False))
    return torch.stack(out)


def _andmask_step(model: torch.nn.Linear, envs, loss_fn, hparams: dict[str, Any]) -> None:
    """The masked step: weight gradients normalised per environment, sign agreement."""
    params = [model.weight, model.bias]
    per_env = []
    for x, y in envs:
        gw, gb = torch.autograd.grad(loss_fn(model(x)[:, 0], y), params)
        per_env.append(torch.cat([(gw / gw.norm()).flatten(), gb]))
    g = torch.stack(per_env)
    mask = (g.sign().sum(0).abs() > len(envs) * hparams["tau"]).float()
    direction = mask * g.mean(0)
    with torch.no_grad():
        d = model.weight.shape[1]
        for p, upd in ((model.weight, direction[:d].view(1, d)), (model.bias, direction[d:])):
            p.sub_(hparams["lr"] * upd + hparams["lr"] * hparams["wd"] * p)
