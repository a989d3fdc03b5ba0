"""Full-batch training of R stacked Colored MNIST models (ERM, IRMv1, grayscale oracle).

Objective of restart r at step t (reference code, ``code/colored_mnist/main.py``):

    L_t = mean_e R^e + l2 · Σ‖θ‖² + λ_t · mean_e D(e),      e ∈ {env1, env2},

with R^e the mean BCE with logits, D(e) the IRMv1 penalty (closed form, see
:mod:`irm_bench.cmnist.penalties`), λ_t = 1 before the anneal step and λ afterwards;
when λ_t > 1, L_t is divided by λ_t (the code does this; the paper's text does not
mention it). Adam, full batch. The reported metrics are those of the forward pass at
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
from typing import TextIO

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from irm_bench.cmnist.model import EnvMetrics, PackedEnvs, StackedMLP, env_metrics
from irm_bench.cmnist.presets import MethodHparams

METRICS = ("risk", "accuracy", "penalty")


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train_stacked` for R restarts.

    Attributes
    ----------
    final
        ``{"<env>_<metric>": array (R,)}`` for env in env1, env2, test and metric in
        risk, accuracy, penalty, from the forward pass at the top of the last step;
        NaN for diverged restarts.
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
        Hyper-parameters; ``hp.steps`` forward passes, ``hp.steps - 1`` updates.
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
    env_names = (*train.env_names, *test.env_names)
    logged_steps: list[int] = []
    logged_values: list[torch.Tensor] = []  # (R, E_train + E_test, 3) per logged step
    last_block = None
    start = time.perf_counter()
    steps = range(hp.steps)
    bar = tqdm(steps, desc=desc, file=progress, mininterval=10.0, disable=progress is None)
    for step in bar:
        last = step == hp.steps - 1
        logged = last or step % log_every == 0
        lam_t = hp.penalty_weight_at(step)
        metrics = env_metrics(model.logits(train.x), train, with_grad=lam_t > 0)
        loss = metrics.risk.mean(1) + hp.l2_weight * model.squared_norm()
        if lam_t > 0:
            loss = loss + lam_t * metrics.penalty.mean(1)
        if lam_t > 1:
            loss = loss / lam_t
        bad = active & ~(torch.isfinite(loss.detach()) & _finite_params(model))
        if bool(bad.any()):
            diverged_step[bad.cpu().numpy()] = step
            active &= ~bad
        if logged:
            with torch.no_grad():
                test_metrics = env_metrics(model.logits(test.x), test, with_grad=False)
            block = torch.cat([_metric_block(metrics), _metric_block(test_metrics)], dim=1)
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
