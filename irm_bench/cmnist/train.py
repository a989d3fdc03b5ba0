"""Full-batch training of R stacked Colored MNIST models, for any registered method.

Objective of restart r at step t (reference code, ``code/colored_mnist/main.py``; the
Fishr authors' ``coloredmnist/train_coloredmnist.py`` for the other methods):

    L_t = risk_term + l2 · Σ‖θ‖² + λ_t · penalty,      e ∈ {env1, env2},

with ``risk_term`` and ``penalty`` the method's objective
(:mod:`irm_bench.methods`) on the step's per-environment statistics: the mean BCE
with logits R^e, and what the method asks for in ``MethodSpec.needs`` — the IRMv1
dummy-scale gradients (closed form, :func:`irm_bench.cmnist.model.env_metrics`) or
Fishr's last-layer gradient variances (closed form,
:func:`irm_bench.cmnist.model.packed_grad_variance`). λ_t = 1 before the anneal step
and λ afterwards; when λ_t > 1, L_t is divided by λ_t (the code does this; the paper's
text does not mention it). Methods without a penalty run with λ = 0: no penalty, no
division. Adam, full batch. The reported metrics are those of the forward pass at
the top of the last step, before its update, i.e. after ``steps - 1`` updates — the
values the reference code appends to its final lists. That last update affects no
reported number, so it is skipped.

Divergence: a restart whose loss or parameters become non-finite is stopped at that
step (its gradients are zeroed from then on, its parameters reset to 0 so no NaN
propagates), marked ``diverged`` with the step, and the others continue.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, TextIO

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from irm_bench.cmnist.model import (
    EnvMetrics,
    PackedEnvs,
    StackedMLP,
    env_metrics,
    packed_grad_variance,
)
from irm_bench.cmnist.presets import MethodHparams
from irm_bench.methods import METHODS as REGISTRY
from irm_bench.methods.contract import EnvStats, ObjectiveTerms

METRICS = ("risk", "accuracy", "penalty")


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train_stacked` for R restarts.

    Attributes
    ----------
    final
        ``{"<env>_<metric>": array (R,)}`` for env in env1, env2, test, gray_test (the
        test environment with the digit in both channels) and metric in risk, accuracy,
        penalty (IRMv1's, logged for every method), from the forward pass at the top of
        the last step; NaN for diverged restarts.
    diverged
        ``bool (R,)``.
    diverged_step
        ``int (R,)``: step whose forward pass was non-finite, -1 if none.
    curves
        Long table: ``restart_pos, step, environment, metric, value`` at every logged
        step (``restart_pos`` indexes the R stacked models).
    seconds
        Wall time of the loop.
    """

    final: dict[str, np.ndarray]
    diverged: np.ndarray
    diverged_step: np.ndarray
    curves: pd.DataFrame
    seconds: float


def _finite_params(model: StackedMLP) -> torch.Tensor:
    return torch.stack(
        [p.isfinite().reshape(p.shape[0], -1).all(1) for p in model.parameters()]
    ).all(0)


def _metric_block(m: EnvMetrics) -> torch.Tensor:
    """(R, E, 3) stack of risk, accuracy, penalty."""
    return torch.stack([m.risk, m.accuracy, m.penalty], dim=-1).detach()


def step_objective(
    model: StackedMLP, train: PackedEnvs, hp: MethodHparams, step: int, state: Any = None
) -> tuple[torch.Tensor, EnvMetrics, ObjectiveTerms]:
    """The loss ``(R,)`` of one step of method ``hp.method``, with its metrics and terms.

    ``loss = risk_term + l2 · Σ‖θ‖² + λ_t · penalty`` (divided by λ_t when λ_t > 1),
    from the objective of :data:`irm_bench.methods.METHODS` ``[hp.method]`` on the
    statistics it needs; ``state`` is the method's state from the previous step
    (``None`` at the first).
    """
    spec = REGISTRY[hp.method]
    lam_t = hp.penalty_weight_at(step)
    if "grad_variance" in spec.needs:
        logits, features = model.logits_and_features(train.x)
    else:
        logits, features = model.logits(train.x), None
    metrics = env_metrics(logits, train, with_grad="scale_grads" in spec.needs and lam_t > 0)
    stats = EnvStats(
        risks=metrics.risk,
        scale_grads=metrics.scale_grad if "scale_grads" in spec.needs else None,
        grad_variance=(
            packed_grad_variance(logits, features, train) if features is not None else None
        ),
    )
    terms = spec.objective(stats, hp.spec_hparams(), state)
    loss = terms.risk_term + hp.l2_weight * model.squared_norm()
    if lam_t > 0:
        loss = loss + lam_t * terms.penalty
    if lam_t > 1:
        loss = loss / lam_t
    return loss, metrics, terms


def train_stacked(
    model: StackedMLP,
    train: PackedEnvs,
    test: PackedEnvs,
    hp: MethodHparams,
    *,
    log_every: int,
    progress: TextIO | None = None,
    desc: str = "train",
) -> TrainResult:
    """Train the R stacked models in place with full-batch Adam.

    Parameters
    ----------
    model
        Stacked weights (modified in place), on the same device as the data.
    train
        Packed training environments, ``env_names == ("env1", "env2")``.
    test
        Packed test environment (forward passes only, at logged steps).
    hp
        Hyper-parameters; ``hp.method`` names the registered method, ``hp.steps``
        forward passes, ``hp.steps - 1`` updates.
    log_every
        Record curves every this many steps (and at the last step).
    progress
        Stream for a tqdm progress bar (e.g. the rule's log); ``None``: no bar.
    desc
        Label of the progress bar.
    """
    if log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every}")
    params = model.parameters()
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=hp.lr)
    R = model.n_models
    active = torch.ones(R, dtype=torch.bool, device=model.w1.device)
    diverged_step = np.full(R, -1, dtype=np.int64)
    env_names = (*train.env_names, *test.env_names, *(f"gray_{n}" for n in test.env_names))
    state = None
    logged_steps: list[int] = []
    logged_values: list[torch.Tensor] = []  # (R, E_train + E_test, 3) per logged step
    last_block = None
    start = time.perf_counter()
    steps = range(hp.steps)
    bar = tqdm(steps, desc=desc, file=progress, mininterval=10.0, disable=progress is None)
    for step in bar:
        last = step == hp.steps - 1
        logged = last or step % log_every == 0
        loss, metrics, terms = step_objective(model, train, hp, step, state)
        state = terms.state
        bad = active & ~(torch.isfinite(loss.detach()) & _finite_params(model))
        if bool(bad.any()):
            diverged_step[bad.cpu().numpy()] = step
            active &= ~bad
        if logged:
            with torch.no_grad():
                test_metrics = env_metrics(model.logits(test.x), test, with_grad=False)
                gray = model.logits(test.x, both_channels=True)
                gray_metrics = env_metrics(gray, test, with_grad=False)
            block = torch.cat(
                [_metric_block(m) for m in (metrics, test_metrics, gray_metrics)], dim=1
            )
            block[~active] = float("nan")
            logged_steps.append(step)
            logged_values.append(block.cpu())
            last_block = logged_values[-1]
        if last or not bool(active.any()):
            break
        optimizer.zero_grad(set_to_none=False)
        torch.where(active, loss, torch.zeros_like(loss)).sum().backward()
        with torch.no_grad():
            for p in params:
                p.grad[~active] = 0.0
        optimizer.step()
        with torch.no_grad():  # stopped restarts: no NaN left to propagate
            for p in params:
                p[~active] = 0.0
    bar.close()
    seconds = time.perf_counter() - start
    for p in params:
        p.requires_grad_(False)
    diverged = diverged_step >= 0
    if last_block is None or logged_steps[-1] != hp.steps - 1:
        # every restart diverged before the last step
        last_block = torch.full((R, len(env_names), 3), float("nan"))
    final = {
        f"{env}_{metric}": last_block[:, e, k].numpy().copy()
        for e, env in enumerate(env_names)
        for k, metric in enumerate(METRICS)
    }
    for values in final.values():
        values[diverged] = np.nan
    curves = _curves_frame(logged_steps, logged_values, env_names)
    return TrainResult(final, diverged, diverged_step, curves, seconds)


def _curves_frame(
    steps: list[int], values: list[torch.Tensor], env_names: tuple[str, ...]
) -> pd.DataFrame:
    if not steps:
        return pd.DataFrame(columns=["restart_pos", "step", "environment", "metric", "value"])
    cube = torch.stack(values).numpy()  # (S, R, E, 3)
    S, R, E, M = cube.shape
    idx = np.indices((S, R, E, M)).reshape(4, -1)
    frame = pd.DataFrame(
        {
            "restart_pos": idx[1],
            "step": np.asarray(steps)[idx[0]],
            "environment": np.asarray(env_names)[idx[2]],
            "metric": np.asarray(METRICS)[idx[3]],
            "value": cube.reshape(-1),
        }
    )
    return frame.dropna(subset=["value"]).reset_index(drop=True)


def keep_freed_memory() -> bool:
    """Ask glibc to serve large blocks from the heap and keep freed memory.

    Each training step allocates and frees several 10-100 MB activation buffers. By
    default glibc maps such blocks freshly each time, and touching new pages costs about
    as much as the ReLUs themselves on a small CPU. Disabling mmap for large blocks (and
    heap trimming) lets freed blocks be reused. Process-wide; call it only in a
    training process. Returns False where glibc's ``mallopt`` is unavailable.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):
        return False
