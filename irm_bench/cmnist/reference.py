"""A straightforward one-model implementation, as the reference codes compute it.

Used as the correctness baseline of the batched, colour-split implementation (tests
compare losses and gradients) and as the "plain autograd" side of
``benchmarks/cmnist_speed.py``: full two-channel input (2·14·14 = 392 features, half of
them zero), one model at a time, every per-environment statistic by autograd rather
than by the closed forms of :mod:`irm_bench.cmnist.model`:

- the IRMv1 dummy-scale gradient from ``torch.autograd.grad(..., create_graph=True)``
  on a scale multiplying the logits (IRM reference code, ``code/colored_mnist/main.py``),
  so the backward pass differentiates through a gradient (a double backward);
- Fishr's per-example gradients of the last linear layer by giving every example its
  own copy of that layer and differentiating the summed loss in the copies (what
  BackPACK's ``BatchGrad`` returns times the batch size, as in the Fishr authors'
  ``coloredmnist/train_coloredmnist.py``), also with ``create_graph=True``.

The per-environment statistics then go through the method's registered objective.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from irm_bench.cmnist.model import StackedMLP
from irm_bench.cmnist.presets import MethodHparams
from irm_bench.envs.cmnist import ColoredMnistEnv
from irm_bench.methods import METHODS
from irm_bench.methods.contract import EnvStats


class ReferenceMLP(nn.Module):
    """nn.Linear MLP with the weights of restart ``index`` of a :class:`StackedMLP`."""

    def __init__(self, stacked: StackedMLP, index: int):
        super().__init__()
        self.grayscale = stacked.grayscale
        layers = []
        for w, b in ((stacked.w1, stacked.b1), (stacked.w2, stacked.b2), (stacked.w3, stacked.b3)):
            lin = nn.Linear(w.shape[1], w.shape[2])
            with torch.no_grad():
                lin.weight.copy_(w[index].T)
                lin.bias.copy_(b[index].reshape(-1))
            layers.append(lin)
        self.main = nn.Sequential(layers[0], nn.ReLU(), layers[1], nn.ReLU())
        self.classifier = layers[2]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Second hidden layer's output ``(n, h)`` of two-channel images ``(n, 2, 14, 14)``."""
        n = images.shape[0]
        flat = images.view(n, 2, 196).sum(1) if self.grayscale else images.view(n, 392)
        return self.main(flat)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``(n,)`` of two-channel images ``(n, 2, 14, 14)``."""
        return self.classifier(self.features(images)).squeeze(-1)


def dummy_scale_grad_autograd(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``d/ds mean BCE(s · logits, labels)`` at s = 1 by autograd (IRM reference code).

    ``logits``, ``labels``: ``(n,)``. Builds the graph of the gradient
    (``create_graph=True``), so the result can be differentiated again.
    """
    scale = torch.ones((), dtype=logits.dtype, device=logits.device, requires_grad=True)
    risk = F.binary_cross_entropy_with_logits(logits * scale, labels)
    (grad,) = torch.autograd.grad(risk, [scale], create_graph=True)
    return grad


def irmv1_penalty_autograd(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The IRMv1 penalty of one environment as the reference code computes it."""
    return dummy_scale_grad_autograd(logits, labels).square()


def per_example_last_layer_grads(
    classifier: nn.Linear, features: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Per-example gradients ``(n, h + 1)`` of BCE in the last layer's weight and bias.

    Each example gets its own copy of the layer; the gradient of the summed loss in
    copy i is example i's gradient. Differentiable in ``features`` and the layer.
    """
    n = features.shape[0]
    copies_w = classifier.weight.expand(n, -1).clone()  # (n, h): row i is example i's
    copies_b = classifier.bias.expand(n).clone()
    for copy in (copies_w, copies_b):
        if not copy.requires_grad:
            copy.requires_grad_(True)
    logits = (features * copies_w).sum(-1) + copies_b
    loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="sum")
    grad_w, grad_b = torch.autograd.grad(loss, [copies_w, copies_b], create_graph=True)
    return torch.cat([grad_w, grad_b[:, None]], dim=1)


def reference_loss(
    model: ReferenceMLP,
    train_envs: list[ColoredMnistEnv] | list[tuple[torch.Tensor, torch.Tensor]],
    hp: MethodHparams,
    step: int,
    state: Any = None,
) -> torch.Tensor:
    """The training loss at ``step`` of method ``hp.method``, statistics by autograd.

    ``train_envs`` holds environments or ``(images (n, 2, 14, 14), labels (n,))`` pairs;
    ``state`` is the method's state of the previous step. Returns the scalar loss
    ``risk_term + l2 · Σ‖θ‖² + λ_t · penalty`` (divided by λ_t when λ_t > 1).
    """
    spec = METHODS[hp.method]
    risks, scale_grads, variances = [], [], []
    for env in train_envs:
        images, labels = (env.images(), env.labels) if isinstance(env, ColoredMnistEnv) else env
        features = model.features(images)
        logits = model.classifier(features).squeeze(-1)
        risks.append(F.binary_cross_entropy_with_logits(logits, labels))
        scale_grads.append(dummy_scale_grad_autograd(logits, labels))
        if "grad_variance" in spec.needs:
            grads = per_example_last_layer_grads(model.classifier, features, labels)
            variances.append((grads - grads.mean(0, keepdim=True)).square().mean(0))
    stats = EnvStats(
        risks=torch.stack(risks)[None],
        scale_grads=torch.stack(scale_grads)[None],
        grad_variance=torch.stack(variances)[None] if variances else None,
    )
    terms = spec.objective(stats, hp.spec_hparams(), state)
    loss = terms.risk_term[0] + hp.l2_weight * sum(p.square().sum() for p in model.parameters())
    lam_t = hp.penalty_weight_at(step)
    if lam_t > 0:
        loss = loss + lam_t * terms.penalty[0]
    if lam_t > 1:
        loss = loss / lam_t
    return loss
