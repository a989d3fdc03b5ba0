"""The IRMv1 penalty of one environment and its average over environments.

IRMv1 (paper, Eq. (IRMv1) in Section 3.1) penalises, per training environment e, the
squared gradient of the environment's risk with respect to a dummy scalar multiplier s
on the logits, at s = 1:

    D(e) = ( d/ds R^e(s * f) |_{s=1} )^2,    R^e = mean_i BCE(s * f_i, y_i).

Since d/ds BCE(s f, y) = (sigmoid(s f) - y) f, the gradient has the closed form
g_e = mean_i (sigmoid(f_i) - y_i) f_i, so neither the penalty nor its gradient with
respect to the network's weights needs a double backward pass. The scale multiplies
the logits, never the labels. The training penalty is the mean of D(e) over the
training environments, each computed on its own data (never on pooled data), as in
the reference code (``train_penalty = stack([penalty(env1), penalty(env2)]).mean()``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812


def dummy_scale_grad(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Closed-form d/ds mean BCE(s * logits, labels) at s = 1.

    Parameters
    ----------
    logits, labels
        Tensors of the same shape ``(..., n)``; labels in {0, 1}. The mean is over the
        last dimension.

    Returns
    -------
    torch.Tensor
        Shape ``(...)``: mean((sigmoid(f) - y) * f); differentiable in ``logits``.
    """
    return ((torch.sigmoid(logits) - labels) * logits).mean(dim=-1)


def irmv1_penalty(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """IRMv1 penalty of one environment, (d/ds R(s f)|_{s=1})^2, shape ``(...)``."""
    return dummy_scale_grad(logits, labels).square()


def irmv1_penalty_autograd(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The same penalty as the reference code computes it: autograd on a dummy scale.

    ``logits`` and ``labels`` are 1-D ``(n,)``. Builds the graph of the gradient
    (``create_graph=True``), so the result can be differentiated again (double backward).
    """
    scale = torch.ones((), dtype=logits.dtype, device=logits.device, requires_grad=True)
    risk = F.binary_cross_entropy_with_logits(logits * scale, labels)
    (grad,) = torch.autograd.grad(risk, [scale], create_graph=True)
    return grad.square()


def mean_penalty_over_envs(
    per_env_logits: list[torch.Tensor], per_env_labels: list[torch.Tensor]
) -> torch.Tensor:
    """Mean over environments of each environment's own IRMv1 penalty.

    Two environments whose dummy-scale gradients are +a and -a give a^2 (a pooled
    penalty would give 0): the average is over environments of squared gradients.
    """
    if len(per_env_logits) != len(per_env_labels) or not per_env_logits:
        raise ValueError("need one labels tensor per environment, and at least one environment")
    return torch.stack(
        [irmv1_penalty(f, y) for f, y in zip(per_env_logits, per_env_labels, strict=True)]
    ).mean(dim=0)
