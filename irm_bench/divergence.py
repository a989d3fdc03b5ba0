"""Stopping diverged models of a stacked (batched) training run, shared by the trainers.

A model whose parameters turn non-finite is stopped: it is marked, the step of the check
that found it is recorded, and its slices of the parameters, their optimiser state and
its data are zeroed so that it stays at zero (gradient 0, Adam state 0) while the other
models of the batch train on. Its result is reported as NaN.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def newly_diverged(
    finite: torch.Tensor, diverged: torch.Tensor, diverged_step: torch.Tensor, step: int
) -> torch.Tensor:
    """Mark the models that just turned non-finite; returns their ``(B,)`` bool mask.

    Parameters
    ----------
    finite
        ``(B,)`` bool, each model's parameters are all finite now.
    diverged, diverged_step
        ``(B,)`` bool and int running records, updated in place (``step`` for new ones).
    step
        The step of this check.
    """
    bad = ~finite & ~diverged
    if bad.any():
        diverged_step[bad] = step
        diverged |= bad
    return bad


def zero_models(tensors: Iterable[torch.Tensor], mask: torch.Tensor, dim: int = -1) -> None:
    """Zero the slices ``mask`` (``(B,)`` bool) along the model axis ``dim`` of each tensor."""
    for t in tensors:
        index = [slice(None)] * t.dim()
        index[dim] = mask
        t[tuple(index)] = 0
