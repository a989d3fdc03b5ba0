"""Hyper-parameters, presets and the plan of training jobs for Colored MNIST.

Paper hyper-parameters are those of the reference code's README / run log
(facebookresearch/InvariantRiskMinimization, ``code/colored_mnist``), as listed in the
IRM paper's Table 1 protocol. The penalty-weight schedule follows the reference code:
λ_t = 1 before ``penalty_anneal_steps`` and λ afterwards, and when λ_t > 1 the whole
loss is divided by λ_t. Methods without a penalty (ERM, the grayscale oracle, GroupDRO)
use λ = 0 with no annealing, i.e. no penalty term and no division at any step.

Every registered method that can run in the ``cmnist`` study trains here through the
method contract (:mod:`irm_bench.methods`). A method without its own entry in a preset
gets the preset's *IRM setup*: IRMv1's hyper-parameters, the protocol of the Fishr
paper's Table 2 (Ramé et al. 2022, Section 6.A, "IRM setup"; the authors' code
``coloredmnist/train_coloredmnist.py``), its penalty weighted and annealed as IRMv1's.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from irm_bench.methods import METHODS as REGISTRY
from irm_bench.methods import check_study
from irm_bench.methods.contract import NoHparams
from irm_bench.registry import lookup

#: Protocol tag of rows that follow the IRM paper's Table 1 (ERM, IRMv1, oracle).
PROTOCOL = "irm-paper-cmnist"
#: Protocol tag of rows that follow the Fishr paper's Table 2 "IRM setup": every method
#: with IRMv1's hyper-parameters, train / test / gray-test accuracy.
TABLE2_PROTOCOL = "fishr-table2-cmnist"
#: IRMv1's penalty weight in the paper's Table 1 run.
PAPER_LAMBDA = 91257.18613115903
#: The Colored MNIST baseline that is not a registry method: ERM on the channel sum.
ORACLE = "grayscale"
#: Matmul precisions of training: the protocol's float32, and bfloat16 autocast (option).
PRECISIONS = ("fp32", "bf16")
#: Study name of Colored MNIST in :data:`irm_bench.methods.contract.STUDIES`.
STUDY = "cmnist"
#: Display name and colour of the oracle (registry methods take theirs from MethodSpec).
ORACLE_LABEL, ORACLE_COLOUR = "Grayscale oracle", "#8172b3"


def method_label(method: str) -> str:
    """Display name of a config method: its ``MethodSpec.label``, or the oracle's."""
    if method == ORACLE:
        return ORACLE_LABEL
    spec = REGISTRY.get(method)
    return spec.label if spec is not None else str(method)


def method_colour(method: str) -> str | None:
    """Matplotlib colour of a config method (``MethodSpec.colour``, or the oracle's)."""
    if method == ORACLE:
        return ORACLE_COLOUR
    spec = REGISTRY.get(method)
    return spec.colour if spec is not None else None


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
        λ, the penalty weight after annealing (0: no penalty).
    penalty_anneal_steps
        Steps with λ_t = 1 before λ applies (0: λ from the first step).
    grayscale
        Sum the two colour channels before the first layer (the oracle that cannot see
        colour).
    method
        Registry key of the method whose objective trains the model
        (:data:`irm_bench.methods.METHODS`; the oracle is ``erm``).
    method_hparams
        The method's own hyper-parameter dataclass (``MethodSpec.hparams``); ``None``:
        its defaults.
    protocol
        Tag of the published protocol these settings follow (:data:`PROTOCOL`,
        :data:`TABLE2_PROTOCOL`); results are compared only with rows of that tag.
    precision
        ``fp32`` (the protocol) or ``bf16``: bfloat16 autocast of the MLP's matmuls,
        everything after the logits in float32 (:data:`PRECISIONS`).
    """

    hidden_dim: int
    l2_weight: float
    lr: float
    steps: int
    penalty_weight: float = 0.0
    penalty_anneal_steps: int = 0
    grayscale: bool = False
    method: str = "erm"
    method_hparams: Any = None
    protocol: str = PROTOCOL
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
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

    def spec_hparams(self) -> Any:
        """The method's own hyper-parameters (its defaults when ``method_hparams`` is None)."""
        return (
            REGISTRY[self.method].hparams() if self.method_hparams is None else self.method_hparams
        )


#: IRMv1's Table 1 hyper-parameters of the reference code: the Fishr paper's "IRM setup".
IRM_SETUP = MethodHparams(
    hidden_dim=390,
    l2_weight=0.00110794568,
    lr=0.0004898536566546834,
    steps=501,
    penalty_weight=PAPER_LAMBDA,
    penalty_anneal_steps=190,
    method="irmv1",
)


def irm_setup(method: str, base: MethodHparams = IRM_SETUP) -> MethodHparams:
    """``base`` for registry method ``method`` under :data:`TABLE2_PROTOCOL`.

    A penalised method keeps λ and its anneal; one without a penalty (ERM, GroupDRO)
    gets λ = 0 and no anneal, so its loss is never divided by λ (the authors' code
    skips the penalty block for ERM).
    """
    spec = REGISTRY[method]
    changes: dict[str, Any] = {"method": method, "protocol": TABLE2_PROTOCOL}
    if not spec.penalised:
        changes.update(penalty_weight=0.0, penalty_anneal_steps=0)
    return dataclasses.replace(base, **changes)


#: Table 1 hyper-parameters of the reference code (ERM, IRMv1, grayscale oracle).
PAPER_HPARAMS: Mapping[str, MethodHparams] = MappingProxyType(
    {
        "erm": MethodHparams(hidden_dim=256, l2_weight=0.001, lr=0.001, steps=501),
        "irmv1": IRM_SETUP,
        ORACLE: MethodHparams(
            hidden_dim=83,
            l2_weight=0.0008602868865288383,
            lr=0.0028171488133821726,
            steps=101,
            grayscale=True,
        ),
    }
)
#: Table 1's methods, in the paper's order.
METHODS = tuple(PAPER_HPARAMS)
#: The Fishr paper's Table 2 methods (IRM setup), in its order.
TABLE2_METHODS = ("erm", "irmv1", "vrex", "fishr")


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named protocol variant: hyper-parameters, restarts and the λ grid.

    Attributes
    ----------
    name
        ``paper``, ``default``, ``methods`` or ``smoke``.
    hparams
        Method name → :class:`MethodHparams` for the methods with settings of their own.
        Every other registered method gets ``irm_setup(method, base)``. The λ sweep
        uses IRMv1's hyper-parameters with ``penalty_weight`` replaced by each grid value.
    restarts
        Restarts per method for the accuracy table.
    sweep_restarts
        Restarts per λ grid point (0: no sweep).
    lambda_grid
        λ values of the sweep.
    max_train_per_env
        Keep only this many images per training environment (``None``: all 25,000).
    methods
        Methods run when ``cmnist.methods`` is null.
    base
        The IRM setup of the methods without an entry in ``hparams``.
    """

    name: str
    hparams: Mapping[str, MethodHparams]
    restarts: int
    sweep_restarts: int
    lambda_grid: tuple[float, ...]
    max_train_per_env: int | None = None
    methods: tuple[str, ...] = (*METHODS, "vrex", "fishr")
    base: MethodHparams = IRM_SETUP

    def hparams_for(self, method: str) -> MethodHparams:
        """Hyper-parameters of config method ``method`` (a registry key or ``grayscale``)."""
        if method in self.hparams:
            return self.hparams[method]
        return irm_setup(method, self.base)


PAPER_LAMBDA_GRID = (0.0, 1.0, 10.0, 1e2, 1e3, 1e4, PAPER_LAMBDA, 1e5, 1e6)

_SMOKE_BASE = dataclasses.replace(IRM_SETUP, steps=11, penalty_anneal_steps=5)

PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        # The full protocol: 10 restarts per method and per λ grid point.
        "paper": Preset("paper", PAPER_HPARAMS, 10, 10, PAPER_LAMBDA_GRID),
        # Same hyper-parameters and full data, one restart, and of the sweep λ = 0 only
        # beside the paper's λ (the Table 1 run, shared), so that model selection has a
        # choice to make. Each λ beside the paper's costs one more IRMv1 model after the
        # anneal step (19 TFLOP of training matmuls; the other jobs do 111; measured
        # +2.2 min for λ = 0 on 2 CPU cores, README).
        "default": Preset("default", PAPER_HPARAMS, 1, 1, (0.0, PAPER_LAMBDA)),
        # The Fishr paper's Table 2 (IRM setup): ERM, IRMv1, V-REx and Fishr, all with
        # IRMv1's hyper-parameters, 10 restarts, no λ sweep.
        "methods": Preset(
            "methods",
            MappingProxyType({ORACLE: PAPER_HPARAMS[ORACLE]}),
            10,
            0,
            (),
            methods=TABLE2_METHODS,
        ),
        # CI: every branch of the DAG in seconds; the numbers mean nothing.
        "smoke": Preset(
            "smoke",
            MappingProxyType(
                {
                    "erm": dataclasses.replace(PAPER_HPARAMS["erm"], steps=11),
                    "irmv1": _SMOKE_BASE,
                    ORACLE: dataclasses.replace(PAPER_HPARAMS[ORACLE], steps=6),
                }
            ),
            2,
            1,
            (0.0, PAPER_LAMBDA),
            max_train_per_env=1000,
            base=_SMOKE_BASE,
        ),
    }
)


def get_preset(name: str) -> Preset:
    """Look up a preset; an unknown name lists the known ones."""
    return lookup(PRESETS, name, "Colored MNIST preset")


@dataclasses.dataclass(frozen=True)
class PenaltyPoint:
    """One penalty weight λ trained by a job, and the restarts each study uses of it.

    Attributes
    ----------
    penalty_weight
        λ of these runs.
    lambda_index
        Index into :attr:`StudyPlan.lambdas` (IRMv1 only, else ``None``).
    table1_restarts, sweep_restarts
        How many of the job's restarts (the first ones) each study uses; 0 when this λ
        is not part of that study.
    """

    penalty_weight: float
    lambda_index: int | None
    table1_restarts: int
    sweep_restarts: int

    def studies(self) -> dict[str, int]:
        """Study name → restarts used, for the studies this λ belongs to."""
        out = {"table1": self.table1_restarts, "sweep": self.sweep_restarts}
        return {k: v for k, v in out.items() if v > 0}


@dataclasses.dataclass(frozen=True)
class TrainJob:
    """One training job of the DAG: one method × its restarts, at one or more λ.

    IRMv1's job trains every λ of :attr:`StudyPlan.lambdas` as a penalty-weight fork
    (:func:`irm_bench.cmnist.train.train_stacked`): the steps before the anneal step,
    where λ_t = 1 whatever λ, are trained once per restart and then continued under
    each λ. Every other method has one point.

    Attributes
    ----------
    name
        Wildcard value: the config method name (``erm``, ``irmv1``, ``grayscale``, ...).
    method
        The config method name: a registry key or ``grayscale``.
    hparams
        The run's hyper-parameters (``penalty_weight``: the first point's λ).
    points
        The λ values trained, in :attr:`StudyPlan.lambdas` order.
    """

    name: str
    method: str
    hparams: MethodHparams
    points: tuple[PenaltyPoint, ...]

    @property
    def restarts(self) -> int:
        """Restarts trained by the job (the most any λ and study needs); every λ of a
        fork trains them all, the rows keep the first ``table1_restarts`` /
        ``sweep_restarts`` of each."""
        return max(max(p.table1_restarts, p.sweep_restarts) for p in self.points)

    def hparams_at(self, point: PenaltyPoint) -> MethodHparams:
        """The hyper-parameters of the runs at ``point``'s λ."""
        return dataclasses.replace(self.hparams, penalty_weight=point.penalty_weight)

    def point(self, penalty_weight: float) -> PenaltyPoint:
        """The point of λ ``penalty_weight`` (``KeyError`` if the job has none)."""
        for p in self.points:
            if p.penalty_weight == penalty_weight:
                return p
        raise KeyError(f"job {self.name!r} trains no λ = {penalty_weight!r}")

    def cpu_minutes(self) -> int:
        """Generous runtime estimate on 2 CPU cores (scheduler ``runtime``), in minutes."""
        hp = self.hparams
        per_step_s = 6e-11 * 50_000 * hp.hidden_dim * (196 + hp.hidden_dim)
        shared = min(hp.penalty_anneal_steps, hp.steps) if len(self.points) > 1 else 0
        model_steps = shared + len(self.points) * (hp.steps - shared)
        return 5 + math.ceil(self.restarts * model_steps * per_step_s / 60)

    def mem_mb(self) -> int:
        """Memory estimate: activations and data of every stacked model, in MB."""
        width = -(-self.hparams.hidden_dim // 16) * 16
        per_model = 50_000 * (6 * width + 2 * 196) * 4 / 2**20
        return 2000 + math.ceil(len(self.points) * per_model)


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


def method_problems(cmnist: Mapping[str, Any]) -> list[str]:
    """One line per entry of ``cmnist.methods`` that Colored MNIST cannot run.

    Each line names the dotted key: an unknown name (with the closest known one), or a
    registered method whose registry entry says it cannot run in this study
    (:func:`irm_bench.methods.check_study`, e.g. ICP). Used by the config validation,
    so the error comes before any training.
    """
    methods = cmnist.get("methods")
    if methods is None:
        preset = PRESETS.get(cmnist.get("preset", "default"))
        methods = preset.methods if preset is not None else ()
    runnable = [n for n, spec in REGISTRY.items() if spec.runs_in(STUDY)] + [ORACLE]
    problems = []
    for i, name in enumerate(methods):
        key = f"cmnist.methods[{i}]"
        if name == ORACLE:
            continue
        if name not in REGISTRY:
            close = difflib.get_close_matches(str(name), runnable, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(
                f"config key '{key}': expected a Colored MNIST method, one of "
                f"{', '.join(runnable)}, found '{name}'{hint}"
            )
            continue
        try:
            check_study(REGISTRY[name], STUDY, key)
        except ValueError as err:
            problems.append(str(err))
    return problems


def build_plan(cmnist: Mapping[str, Any]) -> StudyPlan:
    """Turn the validated ``cmnist`` config section into the list of training jobs.

    The λ table is the sorted union of the sweep grid and Table 1's IRMv1 λ, all trained
    by the one ``irmv1`` job (a penalty-weight fork); a point in both studies is trained
    once (its first ``restarts`` restarts serve Table 1, its first ``sweep_restarts``
    the sweep), which is exact because every restart's data and initialisation depend
    only on (base seed, restart, method), not on the study or λ.

    Raises ``ValueError`` naming the key for a method Colored MNIST cannot run.
    """
    problems = method_problems(cmnist)
    if problems:
        raise ValueError(problems[0])
    preset = get_preset(cmnist["preset"])
    restarts = cmnist.get("restarts") or preset.restarts
    sweep_restarts = cmnist.get("sweep_restarts")  # 0: no sweep, whatever the preset
    sweep_restarts = preset.sweep_restarts if sweep_restarts is None else int(sweep_restarts)
    grid = cmnist.get("lambda_grid")
    grid = tuple(float(v) for v in (preset.lambda_grid if grid is None else grid))
    methods = list(cmnist.get("methods") or preset.methods)
    hparams = {m: preset.hparams_for(m) for m in dict.fromkeys([*methods, "irmv1"])}
    for m, h in hparams.items():
        changes: dict[str, Any] = {}
        spec = REGISTRY[h.method]
        if spec.hparams is not NoHparams and m != ORACLE:
            changes["method_hparams"] = spec.build_hparams(cmnist.get(m), f"cmnist.{m}")
        if cmnist.get("steps") is not None:
            changes["steps"] = int(cmnist["steps"])
        if cmnist.get("precision", "fp32") != "fp32":
            changes["precision"] = cmnist["precision"]
        if cmnist.get("anneal_steps") is not None and spec.penalised:
            changes["penalty_anneal_steps"] = int(cmnist["anneal_steps"])
        hparams[m] = dataclasses.replace(h, **changes)
    irm = hparams["irmv1"]
    lambdas = set(grid) if sweep_restarts else set()
    if "irmv1" in methods:
        lambdas.add(irm.penalty_weight)
    lambdas = tuple(sorted(lambdas))
    jobs: dict[str, TrainJob] = {}
    for method in methods:
        if method != "irmv1":
            point = PenaltyPoint(hparams[method].penalty_weight, None, restarts, 0)
            jobs[method] = TrainJob(method, method, hparams[method], (point,))
    points = tuple(
        PenaltyPoint(
            lam,
            index,
            restarts if "irmv1" in methods and lam == irm.penalty_weight else 0,
            sweep_restarts if lam in grid else 0,
        )
        for index, lam in enumerate(lambdas)
    )
    if points:
        jobs["irmv1"] = TrainJob(
            "irmv1", "irmv1", dataclasses.replace(irm, penalty_weight=lambdas[0]), points
        )
    max_train = cmnist.get("max_train_per_env")
    return StudyPlan(
        preset=preset,
        lambdas=lambdas,
        sweep_indices=tuple(i for i, lam in enumerate(lambdas) if sweep_restarts and lam in grid),
        jobs=MappingProxyType(jobs),
        seed=int(cmnist.get("seed", 0)),
        max_train_per_env=preset.max_train_per_env if max_train is None else max_train,
    )
