"""Hyper-parameters, presets and the plan of training jobs for Colored MNIST.

Paper hyper-parameters are those of the reference code's README / run log
(facebookresearch/InvariantRiskMinimization, ``code/colored_mnist``), as listed in the
IRM paper's Table 1 protocol. The penalty-weight schedule follows the reference code:
λ_t = 1 before ``penalty_anneal_steps`` and λ afterwards, and when λ_t > 1 the whole
loss is divided by λ_t. ERM and the grayscale oracle use λ = 0 with no annealing, i.e.
no penalty term at any step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from irm_bench.registry import lookup

PROTOCOL = "irm-paper-cmnist"
#: IRMv1's penalty weight in the paper's Table 1 run.
PAPER_LAMBDA = 91257.18613115903


@dataclasses.dataclass(frozen=True)
class MethodHparams:
    """Hyper-parameters of one Colored MNIST training run (one method).

    Attributes
    ----------
    hidden_dim
        Width h of the MLP 2·14·14 → h → h → 1 (14·14 → h → h → 1 for the oracle).
    l2_weight
        Weight of Σ‖θ‖² over all parameters (weights and biases) in the loss.
    lr
        Adam learning rate (full batch, betas (0.9, 0.999), eps 1e-8).
    steps
        Number of steps; the reported metrics are the forward pass at the top of the
        last step (after ``steps - 1`` updates).
    penalty_weight
        λ, the IRMv1 penalty weight after annealing (0: no penalty).
    penalty_anneal_steps
        Steps with λ_t = 1 before λ applies (0: λ from the first step).
    grayscale
        Sum the two colour channels before the first layer (the oracle that cannot see
        colour).
    """

    hidden_dim: int
    l2_weight: float
    lr: float
    steps: int
    penalty_weight: float = 0.0
    penalty_anneal_steps: int = 0
    grayscale: bool = False

    def __post_init__(self) -> None:
        for name in ("hidden_dim", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("l2_weight", "penalty_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.penalty_anneal_steps < 0:
            raise ValueError(f"penalty_anneal_steps must be >= 0, got {self.penalty_anneal_steps}")

    def penalty_weight_at(self, step: int) -> float:
        """λ_t of the reference code: 1 before the anneal step, λ from it on."""
        return self.penalty_weight if step >= self.penalty_anneal_steps else 1.0

    @property
    def uses_penalty(self) -> bool:
        """Whether λ_t > 0 at some step (else the penalty is only logged)."""
        return self.penalty_weight > 0 or self.penalty_anneal_steps > 0


#: Table 1 hyper-parameters of the reference code (ERM, IRMv1, grayscale oracle).
PAPER_HPARAMS: Mapping[str, MethodHparams] = MappingProxyType(
    {
        "erm": MethodHparams(hidden_dim=256, l2_weight=0.001, lr=0.001, steps=501),
        "irmv1": MethodHparams(
            hidden_dim=390,
            l2_weight=0.00110794568,
            lr=0.0004898536566546834,
            steps=501,
            penalty_weight=PAPER_LAMBDA,
            penalty_anneal_steps=190,
        ),
        "grayscale": MethodHparams(
            hidden_dim=83,
            l2_weight=0.0008602868865288383,
            lr=0.0028171488133821726,
            steps=101,
            grayscale=True,
        ),
    }
)
METHODS = tuple(PAPER_HPARAMS)


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named protocol variant: hyper-parameters, restarts and the λ grid.

    Attributes
    ----------
    name
        ``paper``, ``default`` or ``smoke``.
    hparams
        Method name → :class:`MethodHparams` for Table 1. The λ sweep uses IRMv1's
        hyper-parameters with ``penalty_weight`` replaced by each grid value.
    restarts
        Restarts per method for Table 1.
    sweep_restarts
        Restarts per λ grid point.
    lambda_grid
        λ values of the sweep.
    max_train_per_env
        Keep only this many images per training environment (``None``: all 25,000).
    """

    name: str
    hparams: Mapping[str, MethodHparams]
    restarts: int
    sweep_restarts: int
    lambda_grid: tuple[float, ...]
    max_train_per_env: int | None = None


PAPER_LAMBDA_GRID = (0.0, 1.0, 10.0, 1e2, 1e3, 1e4, PAPER_LAMBDA, 1e5, 1e6)

PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        # The full protocol: 10 restarts per method and per λ grid point.
        "paper": Preset("paper", PAPER_HPARAMS, 10, 10, PAPER_LAMBDA_GRID),
        # Same hyper-parameters and full data; fewer restarts and λ points so that the
        # study fits in ~15 minutes on 2 CPU cores. The sweep's paper-λ point is the
        # Table 1 IRMv1 run (shared, trained once).
        "default": Preset("default", PAPER_HPARAMS, 1, 1, (0.0, 1e3, PAPER_LAMBDA)),
        # CI: every branch of the DAG in seconds; the numbers mean nothing.
        "smoke": Preset(
            "smoke",
            MappingProxyType(
                {
                    "erm": dataclasses.replace(PAPER_HPARAMS["erm"], steps=11),
                    "irmv1": dataclasses.replace(
                        PAPER_HPARAMS["irmv1"], steps=11, penalty_anneal_steps=5
                    ),
                    "grayscale": dataclasses.replace(PAPER_HPARAMS["grayscale"], steps=6),
                }
            ),
            2,
            1,
            (0.0, PAPER_LAMBDA),
            max_train_per_env=1000,
        ),
    }
)


def get_preset(name: str) -> Preset:
    """Look up a preset; an unknown name lists the known ones."""
    return lookup(PRESETS, name, "Colored MNIST preset")


@dataclasses.dataclass(frozen=True)
class TrainJob:
    """One training job of the DAG: one method (or one λ of IRMv1) × its restarts.

    Attributes
    ----------
    name
        Wildcard value: ``erm``, ``grayscale`` or ``irmv1-lamNN`` (NN indexes
        :attr:`StudyPlan.lambdas`, so no float is ever formatted into a path).
    method
        ``erm``, ``irmv1`` or ``grayscale``.
    hparams
        The run's hyper-parameters.
    lambda_index
        Index into :attr:`StudyPlan.lambdas` (IRMv1 only).
    table1_restarts, sweep_restarts
        How many of the job's restarts (the first ones) each study uses; 0 when the job
        is not part of that study.
    """

    name: str
    method: str
    hparams: MethodHparams
    lambda_index: int | None
    table1_restarts: int
    sweep_restarts: int

    @property
    def restarts(self) -> int:
        """Restarts trained by the job (the most either study needs)."""
        return max(self.table1_restarts, self.sweep_restarts)

    def cpu_minutes(self) -> int:
        """Generous runtime estimate on 2 CPU cores (scheduler ``runtime``), in minutes."""
        per_step_s = 6e-11 * 50_000 * self.hparams.hidden_dim * (196 + self.hparams.hidden_dim)
        return 5 + math.ceil(self.restarts * self.hparams.steps * per_step_s / 60)

    def studies(self) -> dict[str, int]:
        """Study name → restarts used, for the studies this job belongs to."""
        out = {"table1": self.table1_restarts, "sweep": self.sweep_restarts}
        return {k: v for k, v in out.items() if v > 0}


@dataclasses.dataclass(frozen=True)
class StudyPlan:
    """Every training job of the Colored MNIST study for one configuration."""

    preset: Preset
    lambdas: tuple[float, ...]
    sweep_indices: tuple[int, ...]
    jobs: Mapping[str, TrainJob]
    seed: int
    max_train_per_env: int | None


def lambda_name(index: int) -> str:
    """Wildcard-safe name of λ grid point ``index`` (``lam03``)."""
    return f"lam{index:02d}"


def build_plan(cmnist: Mapping[str, Any]) -> StudyPlan:
    """Turn the validated ``cmnist`` config section into the list of training jobs.

    The λ table is the sorted union of the sweep grid and Table 1's IRMv1 λ; a point in
    both studies is one job (its first ``restarts`` restarts serve Table 1, its first
    ``sweep_restarts`` the sweep), which is exact because every restart's data and
    initialisation depend only on (base seed, restart, method), not on the study.
    """
    preset = get_preset(cmnist["preset"])
    restarts = cmnist.get("restarts") or preset.restarts
    sweep_restarts = cmnist.get("sweep_restarts") or preset.sweep_restarts
    grid = cmnist.get("lambda_grid")
    grid = tuple(float(v) for v in (preset.lambda_grid if grid is None else grid))
    methods = list(cmnist.get("methods") or METHODS)
    unknown = [m for m in methods if m not in preset.hparams]
    if unknown:
        raise KeyError(f"cmnist.methods: unknown {unknown}; known: {', '.join(preset.hparams)}")
    hparams = dict(preset.hparams)
    if cmnist.get("steps") is not None:
        hparams = {
            m: dataclasses.replace(h, steps=int(cmnist["steps"])) for m, h in hparams.items()
        }
    irm = hparams["irmv1"]
    if cmnist.get("anneal_steps") is not None:
        irm = dataclasses.replace(irm, penalty_anneal_steps=int(cmnist["anneal_steps"]))
    lambdas = set(grid) if sweep_restarts else set()
    if "irmv1" in methods:
        lambdas.add(irm.penalty_weight)
    lambdas = tuple(sorted(lambdas))
    jobs: dict[str, TrainJob] = {}
    for method in methods:
        if method != "irmv1":
            jobs[method] = TrainJob(method, method, hparams[method], None, restarts, 0)
    for index, lam in enumerate(lambdas):
        name = f"irmv1-{lambda_name(index)}"
        in_table1 = "irmv1" in methods and lam == irm.penalty_weight
        jobs[name] = TrainJob(
            name,
            "irmv1",
            dataclasses.replace(irm, penalty_weight=lam),
            index,
            restarts if in_table1 else 0,
            sweep_restarts if lam in grid else 0,
        )
    max_train = cmnist.get("max_train_per_env")
    return StudyPlan(
        preset=preset,
        lambdas=lambdas,
        sweep_indices=tuple(i for i, lam in enumerate(lambdas) if lam in grid),
        jobs=MappingProxyType(jobs),
        seed=int(cmnist.get("seed", 0)),
        max_train_per_env=preset.max_train_per_env if max_train is None else max_train,
    )
