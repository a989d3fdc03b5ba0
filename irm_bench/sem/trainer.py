"""The SEM study's generic batched trainer: any gradient method of the registry.

Same model as IRMv1's reference SEM protocol (:mod:`irm_bench.methods.irm_linear`):
``Phi`` is ``d x d``, initialised to the identity, the last layer ``w = 1`` stays fixed,
the prediction is ``x Phi 1``; full-batch Adam on the training environments (all but
the last). Every step computes, for every (draw, grid point) model of a job at once,
the per-environment statistics of :class:`~irm_bench.methods.contract.EnvStats` from
the environments' moments (exact, no sampling), calls the method's objective and
minimises

    loss = risk_term + lambda * penalty

(``lambda`` only for methods with ``penalised``; GroupDRO's grid is over its ``eta``).
With ``Sigma_e = X'X/n``, ``c_e = X'y/n``, ``v = Phi 1`` and the residual
``r_i = x_i' v - y_i``:

* ``risks``: ``R_e = v' Sigma_e v - 2 c_e' v + y'y/n``;
* ``scale_grads``: ``d/ds R_e(s f)|_{s=1} = 2 (v' Sigma_e v - c_e' v)``;
* ``grad_variance``: the per-example gradient of ``(h_i . w - y_i)^2`` in ``w`` is
  ``2 r_i h_i`` with ``h_i = Phi' x_i`` (``d`` parameters: the model has no bias), so
  ``Var_e = 4 (E_e[r^2 h_j^2] - E_e[r h_j]^2)`` (biased, as Fishr's code), where
  ``E_e[r h] = Phi' (Sigma_e v - c_e)`` and ``E_e[r^2 h_j^2] = Phi_j' S_e Phi_j`` with
  ``S_e = E_e[r^2 x x'] = sum_kl a_k a_l E_e[z_k z_l x x']``, ``a = (v, -1)``,
  ``z = (x, y)``: the exact fourth moments of the samples
  (:attr:`~irm_bench.envs.moments.LinearMoments.zzxx`), computed once per job.

The loss is a sum over models, and Adam acts elementwise, so one Adam on the stacked
``(D, G, d, d)`` parameter equals independent Adams per model; gradients come from
autograd on these moment formulas (``tests/test_sem_trainer.py`` checks a trajectory
against a one-model autograd loop on the raw samples). Each grid point is selected on
the validation (last) environment by lowest MSE, as IRMv1's ``reg``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from irm_bench.divergence import newly_diverged, zero_models
from irm_bench.envs.moments import LinearMoments
from irm_bench.methods.base import LinearFit
from irm_bench.methods.contract import EnvStats, MethodSpec
from irm_bench.methods.irm_linear import select_by_validation

#: Penalty weights of a penalised method without ``lambda_grid`` in its config block.
DEFAULT_LAMBDA_GRID = (1.0, 100.0, 10000.0)
#: Keys of a method's ``sem.<method>`` block besides its grid and hyper-parameters.
TRAINER_KEYS = ("steps", "lr", "check_every")


@dataclass(frozen=True)
class GradientSEMConfig:
    """One gradient method's SEM settings (its ``sem.<method>`` config block).

    Attributes
    ----------
    hparam
        Name of the swept hyper-parameter: ``lambda`` (the penalty weight) or a field
        of the method's hyper-parameter dataclass (GroupDRO's ``eta``); ``""`` for none.
    grid
        Its values, in grid order (one model per draw and value).
    hparams
        The method's hyper-parameters besides the swept one (defaults unless set).
    penalty_weight
        λ when it is not swept (methods with ``penalised``); 1 otherwise, unused.
    steps, lr
        Full-batch Adam steps and learning rate (betas 0.9, 0.999, eps 1e-8). The
        defaults (2,500 steps at 1e-2) are not IRMv1's 100,000 at 1e-3: they keep the
        three extra methods within ~2 CPU-minutes for the default study. Measured on FOU
        and PES (30 draws): V-REx's mean causal errors after 2,500 steps at 1e-2 are
        within 1% (PES) to 25% (FOU, λ = 10^4) of those after 20,000 steps at 1e-3.
    check_every
        Steps between divergence checks (non-finite ``Phi`` or loss).
    device
        Torch device.
    """

    hparam: str = "lambda"
    grid: tuple[float, ...] = DEFAULT_LAMBDA_GRID
    hparams: Mapping[str, Any] = field(default_factory=dict)
    penalty_weight: float = 1.0
    steps: int = 2500
    lr: float = 1e-2
    check_every: int = 100
    device: str = "cpu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", tuple(float(g) for g in self.grid))
        if not self.grid:
            raise ValueError("the grid must not be empty")
        if self.steps < 1 or self.check_every < 1:
            raise ValueError("steps and check_every must be >= 1")

    @classmethod
    def from_mapping(
        cls, spec: MethodSpec, values: Mapping[str, Any] | None, where: str, device: str = "cpu"
    ) -> GradientSEMConfig:
        """Build from a ``sem.<method>`` block: ``steps``, ``lr``, ``check_every``, at
        most one ``<name>_grid`` (``lambda_grid`` for penalised methods, or a
        hyper-parameter's), and fixed hyper-parameter values.

        Raises ``ValueError`` naming the key (``where.key``) for unknown keys, two grids,
        or a grid over λ of a method without a penalty.
        """
        values = dict(values or {})
        fields = [f.name for f in dataclasses.fields(spec.hparams)]
        grid_names = ["lambda"] * spec.penalised + fields
        known = [*TRAINER_KEYS, *[f"{n}_grid" for n in grid_names], *fields]
        if spec.penalised:
            known.append("lambda")
        unknown = [k for k in values if k not in known]
        if unknown:
            raise ValueError(f"unknown key '{where}.{unknown[0]}'; accepted: {', '.join(known)}")
        grids = [k for k in values if k.endswith("_grid")]
        if len(grids) > 1:
            raise ValueError(f"config key '{where}': give at most one grid, found {grids}")
        trainer = {k: values.pop(k) for k in TRAINER_KEYS if k in values}
        weight = float(values.pop("lambda", 1.0))
        if grids:
            hparam, grid = grids[0][: -len("_grid")], tuple(values.pop(grids[0]))
        elif spec.penalised:
            hparam, grid = "lambda", DEFAULT_LAMBDA_GRID
        elif fields:
            hparam = fields[0]
            grid = (getattr(spec.build_hparams({}, where), hparam),)
        else:
            hparam, grid = "", (math.nan,)
        # Build once per grid value so a bad value fails here, naming the key.
        for g in grid if hparam in fields else ():
            try:
                spec.build_hparams({**values, hparam: g}, where)
            except (TypeError, ValueError) as err:
                raise ValueError(f"config key '{where}.{hparam}_grid': {err}") from None
        spec.build_hparams(values, where)
        return cls(
            hparam=hparam, grid=grid, hparams=values, penalty_weight=weight,
            device=device, **trainer,
        )  # fmt: skip

    def point_hparams(self, spec: MethodSpec, index: int) -> Any:
        """The method's hyper-parameter dataclass at grid point ``index``."""
        values = dict(self.hparams)
        if self.hparam and self.hparam != "lambda":
            values[self.hparam] = self.grid[index]
        return spec.build_hparams(values, f"sem.{spec.name}")

    def point_lambda(self, spec: MethodSpec, index: int) -> float:
        """λ at grid point ``index`` (``nan`` for methods without a penalty)."""
        if not spec.penalised:
            return math.nan
        return self.grid[index] if self.hparam == "lambda" else self.penalty_weight


@dataclass(frozen=True)
class MomentTensors:
    """A job's training-environment moments as float tensors, laid out for ``bmm``.

    ``xx`` ``(D, d, E*d)`` (``xx[n, j, e*d + i] = Sigma_e[i, j]``), ``xy`` ``(D, d, E)``,
    ``yy`` ``(D, E)``, and ``zzxx`` ``(D, K, E*d^2)`` or ``None``: the fourth moments on
    the ``K = (d+1)(d+2)/2`` pairs ``k <= l`` (off-diagonal pairs weighted 2),
    environment-major columns; ``pair_select`` ``((d+1)^2, K)`` picks those pairs from a
    flattened outer product. The layout lets every contraction with the
    models' ``(D, G, ...)`` parameters run as one batched matrix product without a copy.
    """

    xx: torch.Tensor
    xy: torch.Tensor
    yy: torch.Tensor
    zzxx: torch.Tensor | None
    pair_select: torch.Tensor | None = None

    @classmethod
    def from_moments(
        cls, moments: LinearMoments, dtype: torch.dtype, device: torch.device | str
    ) -> MomentTensors:
        """Convert (``moments.zzxx`` is used when present)."""
        kw = dict(dtype=dtype, device=device)
        xx = np.asarray(moments.xx)
        n_draws, n_env, d = xx.shape[:3]
        xx_b = xx.transpose(0, 3, 1, 2).reshape(n_draws, d, n_env * d)
        xy_b = np.asarray(moments.xy).transpose(0, 2, 1)
        zzxx = select = None
        if moments.zzxx is not None:
            # Symmetric in (k, l): keep k <= l, off-diagonal pairs weighted 2 (66 of 121
            # rows for d = 10, nearly halving the step's largest product).
            k, l_, twice = _upper_pairs(d + 1)
            z = moments.zzxx[:, :, k, l_].reshape(n_draws, n_env, len(k), d * d)
            z = z * twice[:, None]
            zzxx = torch.as_tensor(
                np.ascontiguousarray(z.transpose(0, 2, 1, 3)).reshape(n_draws, len(k), -1), **kw
            )
            picks = np.zeros(((d + 1) ** 2, len(k)))
            picks[k * (d + 1) + l_, np.arange(len(k))] = 1.0
            select = torch.as_tensor(picks, **kw)
        return cls(
            torch.as_tensor(np.ascontiguousarray(xx_b), **kw),
            torch.as_tensor(np.ascontiguousarray(xy_b), **kw),
            torch.as_tensor(moments.yy, **kw),
            zzxx,
            select,
        )


def sem_env_stats(phi: torch.Tensor, data: MomentTensors, needs: frozenset[str]) -> EnvStats:
    """Per-environment statistics of ``(D, G)`` models ``phi`` of shape ``(D, G, d, d)``.

    Returns :class:`EnvStats` of ``D * G`` models (model ``draw * G + g``), ``E`` training
    environments; the formulas are in the module docstring. Differentiable in ``phi``.
    """
    d = phi.shape[-1]
    n_env = data.yy.shape[-1]
    v = phi.sum(-1)  # Phi 1: (D, G, d)
    sv = torch.bmm(v, data.xx).unflatten(-1, (n_env, d))  # Sigma_e v: (D, G, E, d)
    vsv = (v[:, :, None, :] * sv).sum(-1)
    cv = torch.bmm(v, data.xy)  # (D, G, E)
    risks = vsv - 2 * cv + data.yy[:, None, :]
    scale_grads = 2 * (vsv - cv) if "scale_grads" in needs else None
    grad_variance = None
    if "grad_variance" in needs:
        if data.zzxx is None:
            raise RuntimeError("grad_variance needs the fourth moments (LinearMoments.zzxx)")
        a = torch.cat([v, -torch.ones_like(v[..., :1])], dim=-1)  # (D, G, d+1)
        aa = (a[..., :, None] * a[..., None, :]).flatten(2) @ data.pair_select  # k <= l
        s = torch.bmm(aa, data.zzxx).unflatten(-1, (n_env, d, d))  # E[r^2 x x']
        second = (phi[:, :, None] * (s @ phi[:, :, None])).sum(-2)  # E[r^2 h_j^2]
        residual = sv - data.xy.transpose(1, 2)[:, None]  # Sigma v - c: (D, G, E, d)
        mean = residual @ phi  # E[r h_j] = Phi' (Sigma v - c)
        grad_variance = (4 * (second - mean.square())).flatten(0, 1)
    return EnvStats(
        risks=risks.flatten(0, 1),
        scale_grads=None if scale_grads is None else scale_grads.flatten(0, 1),
        grad_variance=grad_variance,
    )


def _upper_pairs(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs ``i <= j`` of a symmetric ``size x size`` matrix and their counts (1, 2)."""
    i, j = np.triu_indices(size)
    return i, j, np.where(i == j, 1.0, 2.0)


@dataclass(frozen=True, eq=False)
class GradientTrainResult:
    """``phi`` ``(D, G, d, d)`` (NaN where diverged), ``diverged`` / ``diverged_step``
    ``(D, G)``, ``seconds`` of the training loop."""

    phi: np.ndarray
    diverged: np.ndarray
    diverged_step: np.ndarray
    seconds: float


def train_gradient_batched(
    spec: MethodSpec,
    moments: LinearMoments,
    config: GradientSEMConfig,
    dtype: torch.dtype = torch.float32,
    record_every: int | None = None,
) -> tuple[GradientTrainResult, list[np.ndarray]]:
    """Train method ``spec`` for every (draw, grid point) of ``moments`` at once.

    Parameters
    ----------
    spec
        A registered gradient method (its ``objective`` and ``needs``).
    moments
        ``(D, E)`` moments of the *training* environments (``zzxx`` when ``spec``
        needs ``grad_variance``).
    config
        Grid, steps, learning rate, device.
    dtype
        Training precision (float32, as IRMv1's trainer; float64 for checks).
    record_every
        When set, also return copies of ``phi`` ``(D, G, d, d)`` every that many steps.

    Returns
    -------
    (GradientTrainResult, history)
    """
    device = torch.device(config.device)
    data = MomentTensors.from_moments(moments, dtype, device)
    n_draws, d = data.xy.shape[0], data.xy.shape[1]
    n_grid = len(config.grid)
    hparams = [config.point_hparams(spec, g) for g in range(n_grid)]
    weights = [config.point_lambda(spec, g) for g in range(n_grid)]
    lam = torch.tensor([0.0 if math.isnan(w) else w for w in weights], dtype=dtype, device=device)
    phi = torch.eye(d, dtype=dtype, device=device).repeat(n_draws, n_grid, 1, 1)
    phi.requires_grad_()
    adam = torch.optim.Adam([phi], lr=config.lr)
    diverged = torch.zeros(n_draws * n_grid, dtype=torch.bool, device=device)
    diverged_step = torch.full((n_draws * n_grid,), -1, dtype=torch.long, device=device)
    states: list[Any] = [None] * n_grid
    history: list[np.ndarray] = []
    start = time.perf_counter()
    for step in range(1, config.steps + 1):
        stats = sem_env_stats(phi, data, spec.needs)
        losses = []
        for g in range(n_grid):
            point = EnvStats(
                *(None if t is None else t.unflatten(0, (n_draws, n_grid))[:, g] for t in (
                    stats.risks, stats.scale_grads, stats.grad_variance))
            )  # fmt: skip
            terms = spec.objective(point, hparams[g], states[g])
            states[g] = terms.state
            losses.append(terms.risk_term + lam[g] * terms.penalty)
        loss = torch.stack(losses, dim=1)  # (D, G)
        adam.zero_grad(set_to_none=False)
        loss.sum().backward()
        with torch.no_grad():
            phi.grad.flatten(0, 1)[diverged] = 0  # stopped models stay where they are
            adam.step()
            if step % config.check_every == 0 or step == config.steps:
                finite = torch.isfinite(phi).flatten(2).all(-1) & torch.isfinite(loss.detach())
                bad = newly_diverged(finite.flatten(), diverged, diverged_step, step)
                if bad.any():
                    state = adam.state[phi]
                    flat = [t.flatten(0, 1) for t in (phi, state["exp_avg"], state["exp_avg_sq"])]
                    zero_models(flat, bad, dim=0)
        if record_every and step % record_every == 0:
            history.append(phi.detach().double().cpu().numpy().copy())
    seconds = time.perf_counter() - start
    out = phi.detach().double().cpu().numpy().copy()
    mask = diverged.cpu().numpy().reshape(n_draws, n_grid)
    out[mask] = np.nan
    steps = diverged_step.cpu().numpy().reshape(n_draws, n_grid)
    return GradientTrainResult(out, mask, steps, seconds), history


class SEMGradientMethod:
    """A registered gradient method fitted in the SEM study (:class:`LinearMethod`)."""

    def __init__(self, spec: MethodSpec, config: GradientSEMConfig | None = None) -> None:
        if spec.objective is None:
            raise ValueError(f"method {spec.name!r} has no objective to train")
        self.spec = spec
        self.name = spec.name
        self.config = config or GradientSEMConfig.from_mapping(spec, {}, f"sem.{spec.name}")
        self.last_train_seconds = 0.0

    @property
    def needs_fourth_moments(self) -> bool:
        """Whether :meth:`fit` needs ``moments.zzxx``."""
        return "grad_variance" in self.spec.needs

    def fit(
        self,
        moments: LinearMoments,
        halves: tuple[LinearMoments, LinearMoments] | None = None,
    ) -> LinearFit:
        """Train on all environments but the last; select on the last one."""
        n_env = moments.n_envs
        result, _ = train_gradient_batched(
            self.spec, moments.envs(list(range(n_env - 1))), self.config
        )
        self.last_train_seconds = result.seconds
        coef = result.phi.sum(axis=-1)  # Phi w, w = 1: (D, G, d)
        val_mse = moments.envs([n_env - 1]).mse(coef)[..., 0]
        n_grid = len(self.config.grid)
        columns: dict[str, tuple[float, ...]] = {
            "lambda": tuple(self.config.point_lambda(self.spec, g) for g in range(n_grid))
        }
        if self.config.hparam:
            columns[self.config.hparam] = self.config.grid
        return LinearFit(
            coefficients=coef,
            grid=self.config.grid,
            selected=select_by_validation(val_mse),
            diverged=result.diverged,
            diverged_step=result.diverged_step,
            hparam=self.config.hparam,
            grid_columns=columns,
        )


def train_one_autograd(
    spec: MethodSpec,
    environments: list[tuple[torch.Tensor, torch.Tensor]],
    hparams: Any,
    penalty_weight: float,
    steps: int,
    lr: float = 1e-3,
    record_every: int | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The one-model loop on raw samples, for checks and the benchmark.

    Risks are sample means of squared errors, the dummy-scale gradients come from
    ``torch.autograd.grad`` on a scalar scale, the per-example gradients in ``w`` from
    ``torch.func`` (``vmap`` of ``grad``); no moment formula is used. ``environments``:
    training ``(X (n, d), y (n,))`` pairs (their dtype sets the precision). Returns the
    final ``Phi`` and, when ``record_every`` is set, copies of it every that many steps.
    """
    from torch.func import grad, vmap

    x0 = environments[0][0]
    d = x0.shape[1]
    phi = torch.eye(d, dtype=x0.dtype).requires_grad_()
    w = torch.ones(d, dtype=x0.dtype)
    adam = torch.optim.Adam([phi], lr=lr)
    state, history = None, []

    def example_loss(w_: torch.Tensor, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (h @ w_ - y).square()

    for step in range(1, steps + 1):
        risks, scale_grads, variances = [], [], []
        for x, y in environments:
            h = x @ phi
            scale = torch.ones((), dtype=x.dtype, requires_grad=True)
            risk = (scale * (h @ w) - y).square().mean()
            risks.append(risk)
            if "scale_grads" in spec.needs:
                scale_grads.append(torch.autograd.grad(risk, scale, create_graph=True)[0])
            if "grad_variance" in spec.needs:
                g = vmap(grad(example_loss), in_dims=(None, 0, 0))(w, h, y)  # (n, d)
                variances.append(g.square().mean(0) - g.mean(0).square())
        stats = EnvStats(
            risks=torch.stack(risks)[None],
            scale_grads=torch.stack(scale_grads)[None] if scale_grads else None,
            grad_variance=torch.stack(variances)[None] if variances else None,
        )
        terms = spec.objective(stats, hparams, state)
        state = terms.state
        loss = terms.risk_term + (penalty_weight if spec.penalised else 0.0) * terms.penalty
        adam.zero_grad()
        loss.sum().backward()
        adam.step()
        if record_every and step % record_every == 0:
            history.append(phi.detach().clone())
    return phi.detach(), history
