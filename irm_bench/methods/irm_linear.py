"""IRMv1 for the linear SEM, trained for a whole batch of (draw, reg) models at once.

The reference protocol (``InvariantRiskMinimization`` in the public
``code/experiment_synthetic/models.py``): ``Phi`` is ``d x d``, initialised to the
identity, the classifier ``w = ones(d, 1)`` stays fixed, the predictor is ``x Phi w``;
it is trained on all environments but the last, full batch, with Adam (lr 1e-3) for
100,000 steps on

    reg * sum_e MSE_e + (1 - reg) * sum_e mean_j (dMSE_e / dw_j)^2

for each ``reg`` in ``(0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)``; the ``reg`` with the lowest
MSE on the last environment is kept (strict ``<`` in grid order, so the first of equal
values wins). We report the equivalent penalty weight ``lambda = (1 - reg) / reg``.

Speed: the objective and its gradient depend on the data only through per-environment
moments (:mod:`irm_bench.penalties`), so every ``(draw, reg)`` model of a job is one
slice of a ``(d, d, B)`` tensor and one step of all of them is a handful of vectorised
tensor operations. The loss is a sum over models and Adam acts elementwise, so one Adam
on the stacked parameter equals independent Adams (``tests/test_sem_irm.py`` checks the
batch against a one-model autograd loop on the raw samples).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from irm_bench.divergence import newly_diverged, zero_models
from irm_bench.envs.moments import LinearMoments
from irm_bench.methods.base import LinearFit
from irm_bench.penalties import LinearIRMv1Gradient, batch_last_moments, get_penalty_estimator


def penalty_weight_lambda(reg: float) -> float:
    """The reference's ``reg`` as a penalty weight ``lambda = (1 - reg) / reg`` (inf at 0)."""
    return math.inf if reg == 0 else (1.0 - reg) / reg


@dataclass(frozen=True)
class IRMv1Config:
    """Hyper-parameters of the linear IRMv1 protocol.

    Attributes
    ----------
    reg_grid
        Values of ``reg`` (weight of the summed MSE; the penalty weighs ``1 - reg``).
    steps
        Full-batch Adam steps per fit.
    lr
        Adam learning rate (betas 0.9, 0.999, eps 1e-8: torch defaults, as the reference).
    penalty_estimator
        ``squared`` or ``split`` (see :mod:`irm_bench.penalties`).
    check_every
        Steps between divergence checks (non-finite ``Phi``); the recorded step is the
        check that found it.
    device
        Torch device for training.
    """

    reg_grid: tuple[float, ...] = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    steps: int = 100_000
    lr: float = 1e-3
    penalty_estimator: str = "squared"
    check_every: int = 1000
    device: str = "cpu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "reg_grid", tuple(float(r) for r in self.reg_grid))
        if not self.reg_grid:
            raise ValueError("IRMv1 reg_grid must not be empty")
        if any(not 0 <= r <= 1 for r in self.reg_grid):
            raise ValueError(f"IRMv1 reg values must lie in [0, 1], found {self.reg_grid}")
        if self.steps < 1 or self.check_every < 1:
            raise ValueError("IRMv1 steps and check_every must be >= 1")
        get_penalty_estimator(self.penalty_estimator)


@dataclass(frozen=True, eq=False)
class TrainResult:
    """Final state of a batched IRMv1 run over ``B`` models.

    ``phi``: ``(B, d, d)`` (NaN for diverged models); ``diverged``: ``(B,)`` bool;
    ``diverged_step``: ``(B,)`` int (-1 if finite); ``seconds``: wall time of the loop.
    """

    phi: np.ndarray
    diverged: np.ndarray
    diverged_step: np.ndarray
    seconds: float


def train_batched(
    moments: LinearMoments,
    regs: Sequence[float],
    config: IRMv1Config,
    halves: tuple[LinearMoments, LinearMoments] | None = None,
) -> TrainResult:
    """Train IRMv1 for every (draw, reg) pair of ``moments`` at once.

    Parameters
    ----------
    moments
        ``(D, E)`` moments of the *training* environments.
    regs
        ``R`` values of ``reg``; model ``b = draw * R + j`` uses ``regs[j]``.
    config
        Steps, learning rate, estimator, device.
    halves
        ``(even, odd)`` moments of the training environments (``split`` estimator only).

    Returns
    -------
    TrainResult
        ``phi`` of shape ``(D * R, d, d)``.
    """
    device = torch.device(config.device)
    f32 = dict(dtype=torch.float32, device=device)
    n_regs = len(regs)

    def layout(m: LinearMoments) -> tuple[torch.Tensor, torch.Tensor]:
        return batch_last_moments(
            torch.as_tensor(m.xx, **f32), torch.as_tensor(m.xy, **f32), n_regs
        )

    xx, xy = layout(moments)
    d, batch = xx.shape[1], xx.shape[-1]
    reg = torch.as_tensor(np.tile(np.asarray(regs, dtype=np.float64), batch // n_regs), **f32)
    estimator = get_penalty_estimator(config.penalty_estimator)
    half_tensors = None
    if not estimator.is_squared:
        if halves is None:
            raise ValueError("the split penalty estimator needs the moments of both halves")
        half_tensors = (*layout(halves[0]), *layout(halves[1]))
    gradient = LinearIRMv1Gradient(xx, xy, reg, 1 - reg, half_tensors)

    phi = torch.eye(d, **f32)[:, :, None].repeat(1, 1, batch).requires_grad_()
    adam = torch.optim.Adam([phi], lr=config.lr, fused=True)
    diverged = torch.zeros(batch, dtype=torch.bool, device=device)
    diverged_step = torch.full((batch,), -1, dtype=torch.long, device=device)
    start = time.perf_counter()
    with torch.no_grad():
        for step in range(1, config.steps + 1):
            phi.grad = gradient(phi)
            adam.step()
            if step % config.check_every == 0 or step == config.steps:
                finite = torch.isfinite(phi).all(0).all(0)
                bad = newly_diverged(finite, diverged, diverged_step, step)
                if bad.any():
                    # Stop the diverged models: zero data, parameters and Adam state.
                    gradient.freeze(bad)
                    state = adam.state[phi]
                    zero_models((phi, state["exp_avg"], state["exp_avg_sq"]), bad)
    seconds = time.perf_counter() - start
    out = phi.detach().permute(2, 0, 1).double().cpu().numpy().copy()
    out[diverged.cpu().numpy()] = np.nan
    return TrainResult(out, diverged.cpu().numpy(), diverged_step.cpu().numpy(), seconds)


def select_by_validation(val_mse: np.ndarray) -> np.ndarray:
    """Index of the lowest validation MSE per row of ``(D, R)``; first wins ties; -1 if none.

    Equivalent to the reference loop ``if err < best_err`` over the grid in order;
    NaN (diverged) never wins.
    """
    finite = np.where(np.isfinite(val_mse), val_mse, np.inf)
    best = finite.argmin(axis=1)
    return np.where(np.isfinite(finite.min(axis=1)), best, -1)


class LinearIRMv1:
    """IRMv1 with a linear ``Phi`` and a fixed ``w = 1`` (see the module docstring)."""

    name = "irmv1"

    def __init__(self, config: IRMv1Config | None = None) -> None:
        self.config = config or IRMv1Config()
        self.last_train_seconds = 0.0

    def fit(
        self,
        moments: LinearMoments,
        halves: tuple[LinearMoments, LinearMoments] | None = None,
    ) -> LinearFit:
        """Train on all environments but the last; select ``reg`` on the last one."""
        n_env = moments.n_envs
        train_idx = list(range(n_env - 1))
        train_halves = None if halves is None else tuple(h.envs(train_idx) for h in halves)
        regs = self.config.reg_grid
        result = train_batched(moments.envs(train_idx), regs, self.config, train_halves)
        self.last_train_seconds = result.seconds
        n_draws, n_regs = moments.xy.shape[0], len(regs)
        coef = result.phi.sum(axis=2).reshape(n_draws, n_regs, -1)  # Phi w, w = 1
        val = moments.envs([n_env - 1])
        val_mse = val.mse(coef)[..., 0]
        return LinearFit(
            coefficients=coef,
            grid=regs,
            selected=select_by_validation(val_mse),
            diverged=result.diverged.reshape(n_draws, n_regs),
            diverged_step=result.diverged_step.reshape(n_draws, n_regs),
            hparam="lambda",
            grid_columns={"reg": regs, "lambda": tuple(penalty_weight_lambda(r) for r in regs)},
        )


def train_one_autograd(
    environments: Sequence[tuple[torch.Tensor, torch.Tensor]],
    reg: float,
    steps: int,
    lr: float = 1e-3,
    record_every: int | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The straightforward one-model loop on raw samples, for checks and the benchmark.

    Autograd through ``torch.autograd.grad(MSE_e, w, create_graph=True)`` per environment
    and step, as the reference implementation does. ``environments``: ``(X (n, d),
    y (n,))`` training pairs (dtype sets the precision). Returns the final ``Phi`` and,
    when ``record_every`` is set, copies of ``Phi`` every that many steps.
    """
    x0 = environments[0][0]
    d = x0.shape[1]
    phi = torch.eye(d, dtype=x0.dtype).requires_grad_()
    w = torch.ones(d, 1, dtype=x0.dtype, requires_grad=True)
    adam = torch.optim.Adam([phi], lr=lr)
    history = []
    for step in range(1, steps + 1):
        error = penalty = 0
        for x, y in environments:
            err_e = (x @ phi @ w - y[:, None]).pow(2).mean()
            grad_w = torch.autograd.grad(err_e, w, create_graph=True)[0]
            penalty = penalty + grad_w.pow(2).mean()
            error = error + err_e
        adam.zero_grad()
        (reg * error + (1 - reg) * penalty).backward()
        adam.step()
        if record_every and step % record_every == 0:
            history.append(phi.detach().clone())
    return phi.detach(), history
