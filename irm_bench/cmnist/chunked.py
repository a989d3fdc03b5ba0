"""A cache-sized training step for the Colored MNIST MLP: the same loss and gradient, faster.

Autograd on the whole batch (:func:`irm_bench.cmnist.train.step_objective`) makes every
bias, ReLU and ReLU-backward a pass over tensors of R × 50,000 × 400 float32 (80 MB per
model), far beyond a CPU core's cache. For one model the matmuls dominate and this
costs little, but for the three models of the IRMv1 job after its penalty-weight fork
the whole-batch step slows from 247 to 306 ms per model-step (V-REx's from 245 to 385,
Fishr's from 304 to 448; ``benchmarks/cmnist_speed.py --only-engines`` on this
project's 2-core CPU). Here each model's samples are processed in chunks of a few
thousand, so each elementwise operation runs on a buffer that the matmul has just
written, and the cost per model stays that of one model alone (230-280 ms, 1.0-1.1x
faster than autograd for one model, 1.3-1.6x for three); the chunk's matmuls run at
the speed of full-size ones. Padding rows of the colour-split layout are skipped.
Three phases per step:

1. *Forward, chunk by chunk*: ``h1 = relu(x W1 + b1)``, ``h2 = relu(h1 W2 + b2)``,
   ``f = h2 w3 + b3``, with ``h1`` and ``h2`` kept for phase 3; Fishr's last-layer
   gradient moments ``Σ_i w_ei r_i h2_i`` and ``Σ_i w_ei r_i² h2_i²`` (``r = σ(f) - y``)
   are accumulated from each chunk while it is in cache.
2. *The method's objective* on the per-environment statistics, by autograd on small
   tensors only: the logits ``f (R, 2, P)`` and the two moments ``(R, E, h)`` are leaves,
   the statistics (:func:`irm_bench.cmnist.model.env_metrics`; the moments give Fishr's
   variances exactly as :func:`irm_bench.penalties.last_layer_grad_variance` does) and
   the loss are built from them with the trainer's own composition, and one backward
   pass gives ``∂L/∂f``, ``∂L/∂moments`` and the weight-decay part of ``∂L/∂θ``.
3. *Backward, chunk by chunk*, by the chain rule written out: ``∂L/∂h2`` (from ``f`` and,
   for Fishr, from the moments), ReLU masks, and the weight gradients accumulated into
   ``θ.grad``.

The result equals the autograd step to float rounding (only summation orders differ;
``tests/test_cmnist_chunked.py`` compares loss, metrics and every gradient on real
MNIST digits). It is used for float32 training on the CPU; bf16 autocast and CUDA keep
the autograd step, where whole-batch kernels are what the device wants.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from irm_bench.cmnist.model import (
    N_PIXELS,
    EnvMetrics,
    PackedEnvs,
    StackedMLP,
    env_metrics,
    penalised_loss,
)
from irm_bench.cmnist.presets import MethodHparams
from irm_bench.methods import METHODS as REGISTRY
from irm_bench.methods.contract import EnvStats, ObjectiveTerms

#: Samples per chunk: 4096 × 400 float32 activations (6.5 MB). Measured flat from 2,048
#: to 8,192 (IRMv1 step 231-232 ms), slower at 1,024 (239) and 16,384 (237).
CHUNK = 4096


@dataclasses.dataclass
class _Saved:
    """Activations of one model kept from phase 1 for phase 3."""

    h1: torch.Tensor  # (2, P, h)
    h2: torch.Tensor  # (2, P, h)
    rows: torch.Tensor  # (2,): samples of each colour group (the rest is padding)


@dataclasses.dataclass(frozen=True)
class ChunkInputs:
    """First-layer inputs of a packed set, prepared once for every step that uses it.

    Attributes
    ----------
    pixels
        Per model r, ``(K_r,)`` the pixel indices (of 196) lit in at least one of its
        samples; the others are 0 in every sample, so their rows of W1 meet only zeros.
    x
        Per model r and colour c, ``(k_rc, K_r + 1)``: the group's k_rc real samples (no
        padding) restricted to those pixels, then a column of ones that carries b1.
    rows
        ``(R, 2)`` the group sizes k_rc.
    """

    pixels: tuple[torch.Tensor, ...]
    x: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    rows: torch.Tensor


def prepare_inputs(train: PackedEnvs) -> ChunkInputs:
    """:class:`ChunkInputs` of ``train``: drop never-lit pixels and padding, append ones.

    An exact reduction: ``x W1 + b1 = [x_lit, 1] [W1_lit; b1]`` because the dropped
    products are exact zeros, and the same product transposed gives the gradients of
    ``W1_lit`` and ``b1`` in one matmul (a never-lit pixel's row gets none from the
    data, as with autograd). About 13 % of the first layer's work on MNIST at 14 × 14
    (26 of 196 pixels are never lit in 50,000 training digits).
    """
    rows = (train.weights.sum(1) > 0).sum(-1)  # padding has weight 0 in every environment
    pixels, x = [], []
    for r in range(train.x.shape[0]):
        groups = [train.x[r, c, : int(rows[r, c])] for c in (0, 1)]
        lit = torch.cat(groups).ne(0).any(0).nonzero().flatten()
        pixels.append(lit)
        x.append(
            tuple(
                torch.cat([g.index_select(1, lit), torch.ones(g.shape[0], 1)], dim=1)
                for g in groups
            )
        )
    return ChunkInputs(pixels=tuple(pixels), x=tuple(x), rows=rows)


def _w1_block(model: StackedMLP, tensor: torch.Tensor, r: int, c: int) -> torch.Tensor:
    """Rows of the first-layer matrix that colour c's samples meet (see model.py)."""
    if model.grayscale:
        return tensor[r]
    return tensor[r, c * N_PIXELS : (c + 1) * N_PIXELS]


def chunked_objective(
    model: StackedMLP,
    train: PackedEnvs,
    hp: MethodHparams,
    lam_t: torch.Tensor,
    state: Any,
    *,
    active: torch.Tensor,
    chunk: int = CHUNK,
    inputs: ChunkInputs | None = None,
) -> tuple[torch.Tensor, EnvMetrics, ObjectiveTerms, Callable[[], None]]:
    """Loss ``(R,)``, metrics and terms of one step, and a function that fills ``θ.grad``.

    ``lam_t`` ``(R,)`` is each model's penalty weight at this step (λ_t); the loss is the
    trainer's composition, :func:`irm_bench.cmnist.model.penalised_loss`. ``active`` ``(R,)``:
    models still training; the returned ``backward()`` adds to each parameter's
    ``.grad`` the gradient of ``Σ_r active_r · loss_r`` (inactive models get 0), as the
    trainer's ``torch.where(active, loss, 0).sum().backward()`` would.
    ``inputs``: :func:`prepare_inputs` of ``train`` (pass it when ``train`` serves many
    steps; ``None`` prepares it here). Raises ``ValueError`` for bf16 precision (use
    the autograd step).
    """
    if model.precision != "fp32":
        raise ValueError(f"the chunked step is float32 only, got precision {model.precision!r}")
    spec = REGISTRY[hp.method]
    fishr = "grad_variance" in spec.needs
    R, _, P, _ = train.x.shape
    E = train.weights.shape[1]
    h = model.b1.shape[1]
    if inputs is None:
        inputs = prepare_inputs(train)
    logits = torch.zeros(R, 2, P)  # padding rows keep 0 (their weight is 0 anyway)
    rows = inputs.rows
    saved: list[_Saved | None] = []
    m1 = torch.zeros(R, E, h)  # Σ_i w_ei r_i h2_i
    m2 = torch.zeros(R, E, h)  # Σ_i w_ei r_i² h2_i²
    with torch.no_grad():
        for r in range(R):
            if not bool(active[r]):  # a stopped model's parameters are 0, so are its logits
                saved.append(None)
                logits[r] = 0.0
                continue
            keep = _Saved(h1=torch.empty(2, P, h), h2=torch.empty(2, P, h), rows=rows[r])
            lit = inputs.pixels[r]
            for c in (0, 1):
                w1 = _w1_block(model, model.w1, r, c).index_select(0, lit)
                w1 = torch.cat([w1, model.b1[r][None]])  # (K_r + 1, h): b1 meets the ones
                x = inputs.x[r][c]
                k = int(rows[r, c])
                for s in range(0, k, chunk):
                    sl = slice(s, min(k, s + chunk))
                    h1 = torch.mm(x[sl], w1, out=keep.h1[c, sl]).relu_()
                    h2 = torch.addmm(model.b2[r], h1, model.w2[r], out=keep.h2[c, sl])
                    h2.relu_()
                    f = torch.addmv(model.b3[r], h2, model.w3[r, :, 0], out=logits[r, c, sl])
                    if fishr:
                        res = torch.sigmoid(f) - train.labels[r, c, sl]
                        wr = train.weights[r, :, c, sl] * res
                        m1[r].addmm_(wr, h2)
                        m2[r].addmm_(wr * res, h2.square())
            saved.append(keep)

    f_leaf = logits.requires_grad_(True)
    m1_leaf = m1.requires_grad_(fishr)
    m2_leaf = m2.requires_grad_(fishr)
    metrics = env_metrics(f_leaf, train, with_grad="scale_grads" in spec.needs)
    grad_variance = None
    if fishr:
        residual = (torch.sigmoid(f_leaf) - train.labels).reshape(R, 2 * P)
        wr = train.weights.reshape(R, E, 2 * P) * residual[:, None, :]
        bias_var = (wr * residual[:, None, :]).sum(-1, keepdim=True) - wr.sum(
            -1, keepdim=True
        ).square()
        grad_variance = torch.cat([m2_leaf - m1_leaf.square(), bias_var], dim=-1)
    stats = EnvStats(
        risks=metrics.risk,
        scale_grads=metrics.scale_grad if "scale_grads" in spec.needs else None,
        grad_variance=grad_variance,
    )
    terms = spec.objective(stats, hp.spec_hparams(), state)
    loss = penalised_loss(terms.risk_term, terms.penalty, model, hp.l2_weight, lam_t)

    def backward() -> None:
        torch.where(active, loss, torch.zeros_like(loss)).sum().backward()
        g_logits = f_leaf.grad
        with torch.no_grad():
            for r in range(R):
                keep = saved[r]
                if keep is None or not bool(active[r]):  # stopped, or stopped at this step
                    continue
                _backward_model(
                    model,
                    train,
                    inputs,
                    keep,
                    f_leaf.detach()[r],
                    g_logits[r],
                    r,
                    chunk,
                    fishr,
                    m1_leaf,
                    m2_leaf,
                )

    return loss, metrics, terms, backward


def _backward_model(
    model: StackedMLP,
    train: PackedEnvs,
    inputs: ChunkInputs,
    keep: _Saved,
    logits: torch.Tensor,
    g_logits: torch.Tensor,
    r: int,
    chunk: int,
    fishr: bool,
    m1: torch.Tensor,
    m2: torch.Tensor,
) -> None:
    """Phase 3 for model r: add the data part of ∂L/∂θ into its ``.grad`` slices."""
    w3 = model.w3[r, :, 0]
    gw1, gb1 = model.w1.grad, model.b1.grad
    gw2, gb2 = model.w2.grad[r], model.b2.grad[r]
    gw3, gb3 = model.w3.grad[r, :, 0], model.b3.grad
    if fishr:
        A, B = m1.grad[r], m2.grad[r]  # (E, h): ∂L/∂m1, ∂L/∂m2
    lit = inputs.pixels[r]
    for c in (0, 1):
        x = inputs.x[r][c]
        g1 = torch.zeros(x.shape[1], gw2.shape[1])  # ∂L/∂[W1_lit; b1] of colour c's rows
        k = int(keep.rows[c])
        for s in range(0, k, chunk):
            sl = slice(s, min(k, s + chunk))
            h1, h2 = keep.h1[c, sl], keep.h2[c, sl]
            g_f = g_logits[c, sl]
            if fishr:
                u = train.weights[r, :, c, sl].T  # (C, E)
                sig = torch.sigmoid(logits[c, sl])
                res = sig - train.labels[r, c, sl]
                dres = sig * (1.0 - sig)
                h2sq = h2.square()
                # ∂/∂f_i of Σ_e Σ_k A_ek w_ei r_i h2_ik + B_ek w_ei r_i² h2_ik²
                g_extra = dres * (u * (h2 @ A.T + 2.0 * res[:, None] * (h2sq @ B.T))).sum(1)
                g_f = g_f + g_extra
            dh2 = torch.outer(g_f, w3)
            if fishr:
                dh2.addmm_(u * res[:, None], A)
                dh2.add_(h2 * ((u * res.square()[:, None]) @ B), alpha=2.0)
            gw3.addmv_(h2.T, g_f)
            gb3[r] += g_f.sum()
            dz2 = torch.ops.aten.threshold_backward(dh2, h2, 0.0)
            gw2.addmm_(h1.T, dz2)
            gb2.add_(dz2.sum(0))
            dz1 = torch.ops.aten.threshold_backward(dz2 @ model.w2[r].T, h1, 0.0)
            g1.addmm_(x[sl].T, dz1)
        _w1_block(model, gw1, r, c).index_add_(0, lit, g1[:-1])
        gb1[r].add_(g1[-1])
