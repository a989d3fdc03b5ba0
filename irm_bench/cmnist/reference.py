"""A straightforward one-model implementation, as the reference code computes it.

Used as the correctness baseline of the batched, colour-split implementation (tests
compare gradients) and as the "plain autograd" side of ``benchmarks/cmnist_speed.py``:
full two-channel input (2·14·14 = 392 features, half of them zero), the IRMv1 penalty
from ``torch.autograd.grad(..., create_graph=True)`` on a dummy scale (so the backward
pass differentiates through a gradient: a double backward), one model at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from irm_bench.cmnist.model import StackedMLP
from irm_bench.cmnist.penalties import irmv1_penalty_autograd
from irm_bench.cmnist.presets import MethodHparams
from irm_bench.envs.cmnist import ColoredMnistEnv


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
        self.main = nn.Sequential(layers[0], nn.ReLU(), layers[1], nn.ReLU(), layers[2])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``(n,)`` of two-channel images ``(n, 2, 14, 14)``."""
        n = images.shape[0]
        flat = images.view(n, 2, 196).sum(1) if self.grayscale else images.view(n, 392)
        return self.main(flat).squeeze(-1)


def reference_loss(
    model: ReferenceMLP,
    train_envs: list[ColoredMnistEnv] | list[tuple[torch.Tensor, torch.Tensor]],
    hp: MethodHparams,
    step: int,
) -> torch.Tensor:
    """The reference code's training loss at ``step`` (penalty by autograd).

    ``train_envs`` holds environments or ``(images (n, 2, 14, 14), labels (n,))`` pairs.
    """
    risks, penalties = [], []
    for env in train_envs:
        images, labels = (env.images(), env.labels) if isinstance(env, ColoredMnistEnv) else env
        logits = model(images)
        risks.append(F.binary_cross_entropy_with_logits(logits, labels))
        penalties.append(irmv1_penalty_autograd(logits, labels))
    loss = torch.stack(risks).mean()
    loss = loss + hp.l2_weight * sum(p.square().sum() for p in model.parameters())
    lam_t = hp.penalty_weight_at(step)
    loss = loss + lam_t * torch.stack(penalties).mean()
    if lam_t > 1:
        loss = loss / lam_t
    return loss
