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
from collections.abc import Sequence
from typing import Any, TextIO

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from irm_bench.cmnist.chunked import chunked_objective, prepare_inputs
from irm_bench.cmnist.model import (
    EnvMetrics,
    PackedEnvs,
    StackedMLP,
    env_metrics,
    packed_grad_variance,
    penalised_loss,
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
        the last step, plus the ``extra`` environments (colour only) when given; NaN for
        diverged restarts.
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


def penalty_weights_at(hp: MethodHparams, weights: torch.Tensor, step: int) -> torch.Tensor:
    """λ_t per model ``(R,)``: 1 before ``hp``'s anneal step, ``weights`` from it on."""
    return weights if step >= hp.penalty_anneal_steps else torch.ones_like(weights)


def step_objective(
    model: StackedMLP,
    train: PackedEnvs,
    hp: MethodHparams,
    step: int,
    state: Any = None,
    penalty_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, EnvMetrics, ObjectiveTerms]:
    """The loss ``(R,)`` of one step of method ``hp.method``, with its metrics and terms.

    ``loss = risk_term + l2 · Σ‖θ‖² + λ_t · penalty`` (divided by λ_t when λ_t > 1),
    from the objective of :data:`irm_bench.methods.METHODS` ``[hp.method]`` on the
    statistics it needs; ``state`` is the method's state from the previous step
    (``None`` at the first). ``penalty_weights`` ``(R,)``: one λ per stacked model
    in place of ``hp.penalty_weight`` (a penalty-weight fork, see :func:`train_stacked`);
    each model's loss is then the one it would have with its λ alone, term by term.
    """
    if penalty_weights is not None:
        return _step_objective_per_model(model, train, hp, step, state, penalty_weights)
    lam_t = hp.penalty_weight_at(step)
    metrics, terms = _method_terms(model, train, hp, state, penalty_on=lam_t > 0)
    loss = terms.risk_term + hp.l2_weight * model.squared_norm()
    if lam_t > 0:
        loss = loss + lam_t * terms.penalty
    if lam_t > 1:
        loss = loss / lam_t
    return loss, metrics, terms


def _method_terms(
    model: StackedMLP, train: PackedEnvs, hp: MethodHparams, state: Any, *, penalty_on: bool
) -> tuple[EnvMetrics, ObjectiveTerms]:
    """Forward pass, the statistics ``hp.method`` needs, and its objective's terms."""
    spec = REGISTRY[hp.method]
    if "grad_variance" in spec.needs:
        logits, features = model.logits_and_features(train.x)
    else:
        logits, features = model.logits(train.x), None
    metrics = env_metrics(logits, train, with_grad="scale_grads" in spec.needs and penalty_on)
    stats = EnvStats(
        risks=metrics.risk,
        scale_grads=metrics.scale_grad if "scale_grads" in spec.needs else None,
        grad_variance=(
            packed_grad_variance(logits, features, train) if features is not None else None
        ),
    )
    return metrics, spec.objective(stats, hp.spec_hparams(), state)


def _step_objective_per_model(
    model: StackedMLP,
    train: PackedEnvs,
    hp: MethodHparams,
    step: int,
    state: Any,
    penalty_weights: torch.Tensor,
) -> tuple[torch.Tensor, EnvMetrics, ObjectiveTerms]:
    lam_t = penalty_weights_at(hp, penalty_weights, step)
    metrics, terms = _method_terms(model, train, hp, state, penalty_on=bool((lam_t > 0).any()))
    loss = penalised_loss(terms.risk_term, terms.penalty, model, hp.l2_weight, lam_t)
    return loss, metrics, terms


def _tile(t: torch.Tensor, copies: int) -> torch.Tensor:
    """``copies`` copies of ``t`` along its leading axis (copy-major)."""
    return t.repeat(copies, *([1] * (t.dim() - 1)))


def _fork(
    model: StackedMLP,
    optimizer: torch.optim.Adam,
    copies: int,
    lr: float,
) -> torch.optim.Adam:
    """Replace the R models by ``copies`` copies of each, Adam state included.

    The copies are laid out copy-major (position ``l · R + r`` is copy l of model r), so
    every copy continues exactly as its original would.
    """
    old = model.parameters()
    for name in ("w1", "b1", "w2", "b2", "w3", "b3"):
        setattr(model, name, _tile(getattr(model, name).detach(), copies).requires_grad_(True))
    new = model.parameters()
    forked = torch.optim.Adam(new, lr=lr)
    for p_old, p_new in zip(old, new, strict=True):
        state = optimizer.state.get(p_old)
        if state:  # Adam's step counter is a 0-d tensor shared by all models
            forked.state[p_new] = {
                k: _tile(v, copies) if v.dim() else v.clone() for k, v in state.items()
            }
    return forked


def tile_envs(packed: PackedEnvs, copies: int) -> PackedEnvs:
    """``copies`` copies of R restarts' packed data, copy-major: ``(copies · R, ...)``."""
    return dataclasses.replace(
        packed,
        x=_tile(packed.x, copies),
        labels=_tile(packed.labels, copies),
        weights=_tile(packed.weights, copies),
        sizes=packed.sizes * copies,
    )


def train_stacked(
    model: StackedMLP,
    train: PackedEnvs,
    test: PackedEnvs,
    hp: MethodHparams,
    *,
    log_every: int,
    progress: TextIO | None = None,
    desc: str = "train",
    penalty_weights: Sequence[float] | None = None,
    extra: PackedEnvs | None = None,
    engine: str = "auto",
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
    penalty_weights
        L > 1 penalty weights λ_1..λ_L to train from each of the R models (a *penalty-
        weight fork*; ``None``: ``hp.penalty_weight`` alone). Before the anneal step
        λ_t = 1 whatever λ, so the L runs of a restart are the same run up to there:
        it is trained once, then each model, its Adam state and its data are copied L
        times (position ``l · R + r``: λ_l of model r) and every copy continues with its
        own λ. An exact reduction of the work (``anneal`` of the ``steps`` steps once
        instead of L times): each copy's numbers are those of training it alone, to
        float rounding. ``model`` then holds the L · R models and every array of the
        result is ``(L · R,)`` in that order.
    extra
        More packed environments evaluated at logged steps, forward passes only and
        without a gray version (model selection's validation and test parts,
        :data:`irm_bench.envs.cmnist.SELECTION_ENVS`); they add curves and ``final``
        entries and change no other number.
    engine
        How a step's loss and gradient are computed: ``autograd`` (whole-batch autograd,
        :func:`step_objective`), ``chunked`` (:mod:`irm_bench.cmnist.chunked`: the same
        numbers to float rounding, cache-sized chunks, float32 on the CPU only) or
        ``auto`` (:func:`step_engine`: chunked for float32 on the CPU, else autograd).

    Raises ``ValueError`` for ``log_every < 1`` or an unknown or unusable ``engine``.
    """
    if log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every}")
    engine = step_engine(model, engine)
    weights = None if penalty_weights is None else tuple(float(w) for w in penalty_weights)
    fork_step = None
    if weights is not None and len(weights) > 1:
        fork_step = min(hp.penalty_anneal_steps, hp.steps - 1)
    elif weights is not None:
        hp = dataclasses.replace(hp, penalty_weight=weights[0])
    params = model.parameters()
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=hp.lr)
    R = model.n_models
    active = torch.ones(R, dtype=torch.bool, device=model.w1.device)
    diverged_step = np.full(R, -1, dtype=np.int64)
    env_names = (*train.env_names, *test.env_names, *(f"gray_{n}" for n in test.env_names))
    if extra is not None:
        env_names = (*env_names, *extra.env_names)
    state = None
    inputs = None  # the chunked engine's prepared first-layer inputs
    lam = None  # per-model λ once forked
    logged_steps: list[int] = []
    logged_values: list[torch.Tensor] = []  # (R, E_train + E_test, 3) per logged step
    last_block = None
    start = time.perf_counter()
    steps = range(hp.steps)
    bar = tqdm(steps, desc=desc, file=progress, mininterval=10.0, disable=progress is None)
    for step in bar:
        if step == fork_step:
            L = len(weights)
            optimizer = _fork(model, optimizer, L, hp.lr)
            params = model.parameters()
            train, test = tile_envs(train, L), tile_envs(test, L)
            inputs = None
            extra = None if extra is None else tile_envs(extra, L)
            active, diverged_step = _tile(active, L), np.tile(diverged_step, L)
            logged_values = [_tile(v, L) for v in logged_values]
            lam = torch.tensor(weights, device=model.w1.device).repeat_interleave(R)
            state = _tile_state(state, L)
            R *= L
        last = step == hp.steps - 1
        logged = last or step % log_every == 0
        backward = None
        if engine == "chunked":
            lam_t = (
                torch.full((R,), hp.penalty_weight_at(step))
                if lam is None
                else penalty_weights_at(hp, lam, step)
            )
            if inputs is None:  # once, and again for the forked models' data
                inputs = prepare_inputs(train)
            loss, metrics, terms, backward = chunked_objective(
                model, train, hp, lam_t, state, active=active, inputs=inputs
            )
        else:
            loss, metrics, terms = step_objective(model, train, hp, step, state, lam)
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
                evaluated = [metrics, test_metrics, gray_metrics]
                if extra is not None:
                    evaluated.append(env_metrics(model.logits(extra.x), extra, with_grad=False))
            block = torch.cat([_metric_block(m) for m in evaluated], dim=1)
            block[~active] = float("nan")
            logged_steps.append(step)
            logged_values.append(block.cpu())
            last_block = logged_values[-1]
        if last or not bool(active.any()):
            break
        optimizer.zero_grad(set_to_none=False)
        if backward is not None:
            _ensure_grads(params)
            backward()
        else:
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
    if fork_step is not None and lam is None:
        # every restart diverged before the fork: report each λ's copy as diverged
        L = len(weights)
        _fork(model, optimizer, L, hp.lr)
        diverged_step = np.tile(diverged_step, L)
        logged_values = [_tile(v, L) for v in logged_values]
        R *= L
    for p in model.parameters():
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


ENGINES = ("auto", "autograd", "chunked")


def step_engine(model: StackedMLP, engine: str = "auto") -> str:
    """The step engine :func:`train_stacked` uses for ``model``: ``autograd`` or ``chunked``.

    ``auto`` picks ``chunked`` for float32 models on the CPU (1.0-1.6x faster there,
    ``benchmarks/cmnist_speed.py``) and ``autograd`` otherwise (bf16 autocast, CUDA).
    Raises ``ValueError`` for an unknown engine, or ``chunked`` on a bf16 or non-CPU model.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown step engine {engine!r}; choose one of {', '.join(ENGINES)}")
    usable = model.precision == "fp32" and model.w1.device.type == "cpu"
    if engine == "auto":
        return "chunked" if usable else "autograd"
    if engine == "chunked" and not usable:
        raise ValueError(
            "the chunked step engine needs a float32 model on the CPU, got "
            f"precision {model.precision!r} on {model.w1.device.type}"
        )
    return engine


def _ensure_grads(params: list[torch.Tensor]) -> None:
    """Zero ``.grad`` buffers where none exist yet (the chunked backward adds into them)."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)


def _tile_state(state: Any, copies: int) -> Any:
    """A method's state for the forked models: tensors with a leading model axis tiled."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return _tile(state, copies) if state.dim() else state
    raise TypeError(f"cannot fork a method state of type {type(state).__name__}")


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
