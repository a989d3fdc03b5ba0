"""The unit-test study's protocol: methods, hyper-parameter search, seeds, one job.

Follows the authors' code (facebookresearch/InvarianceUnitTests, ``scripts/main.py``,
``sweep.py``, ``models.py``): per (task, method), ``n_trials`` hyper-parameter draws
(trial 0: the defaults; the others random, one draw per trial shared by every data seed,
as their model seed) times ``n_data_seeds`` data seeds; each data seed draws the task's
constants and ``n_samples`` examples per environment of the ``train``, ``validation``
(same distribution) and ``test`` (spurious features shuffled) splits; full-batch
training for ``n_iterations``. The oracle is ERM trained and validated on the ``test``
split's distribution (their ``train_split = "test"`` for ``Oracle``).

Search distributions (theirs for ERM, IRMv1, ANDMask, IGA; DomainBed's for the others):
``lr = 10^U(a, b)``, ``wd = 10^U(a, b)`` (default 0), IRMv1 ``irm_lambda = 1 - 10^U(-3,
-0.3)`` (convex mix ``(1 - l) mean_e R_e + l sum_e g_e^2``), ANDMask ``tau = U(0.8, 1)``,
IGA ``penalty = 10^U(1, 5)``, V-REx ``10^U(-1, 5)``, Fishr ``10^U(1, 4)``, GroupDRO
``eta = 10^U(-3, -1)``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from irm_bench.envs.unit_tests import UNIT_TEST_TASKS, make_task
from irm_bench.methods import get_method
from irm_bench.methods.andmask import ANDMaskHparams
from irm_bench.methods.contract import NoHparams
from irm_bench.methods.groupdro import GroupDROHparams
from irm_bench.seeds import derive_seed, numpy_generator, torch_generator
from irm_bench.unit_tests import trainer


@dataclass(frozen=True)
class SearchDist:
    """One hyper-parameter's search distribution.

    ``kind``: ``log10`` (``10^U(low, high)``), ``uniform`` (``U(low, high)``) or
    ``one_minus_log10`` (``1 - 10^U(low, high)``); ``default`` is trial 0's value.
    """

    kind: str
    low: float
    high: float
    default: float

    def draw(self, rng: np.random.Generator) -> float:
        u = float(rng.uniform(self.low, self.high))
        if self.kind == "log10":
            return 10.0**u
        if self.kind == "one_minus_log10":
            return 1.0 - 10.0**u
        return u


_LR = SearchDist("log10", -4.0, -2.0, 1e-3)
_WD = SearchDist("log10", -6.0, -2.0, 0.0)


@dataclass(frozen=True)
class StudyMethod:
    """A method of the study: the registry method, its training split, its search."""

    name: str
    registry: str
    label: str
    train_split: str
    search: Mapping[str, SearchDist]


#: The study's methods in display order; ``oracle`` is ERM on the test distribution.
STUDY_METHODS: dict[str, StudyMethod] = {
    m.name: m
    for m in (
        StudyMethod("erm", "erm", "ERM", "train", {"lr": _LR, "wd": _WD}),
        StudyMethod(
            "irmv1",
            "irmv1",
            "IRMv1",
            "train",
            {"lr": _LR, "wd": _WD, "irm_lambda": SearchDist("one_minus_log10", -3, -0.3, 0.9)},
        ),
        StudyMethod(
            "andmask",
            "andmask",
            "ANDMask",
            "train",
            {
                "lr": SearchDist("log10", -4.0, 0.0, 1e-3),
                "wd": SearchDist("log10", -5.0, 0.0, 0.0),
                "tau": SearchDist("uniform", 0.8, 1.0, 0.9),
            },
        ),
        StudyMethod(
            "iga",
            "iga",
            "IGA",
            "train",
            {"lr": _LR, "wd": _WD, "penalty": SearchDist("log10", 1.0, 5.0, 1000.0)},
        ),
        StudyMethod("oracle", "erm", "Oracle", "test", {"lr": _LR, "wd": _WD}),
        StudyMethod(
            "vrex",
            "vrex",
            "V-REx",
            "train",
            {"lr": _LR, "wd": _WD, "penalty": SearchDist("log10", -1.0, 5.0, 10.0)},
        ),
        StudyMethod(
            "fishr",
            "fishr",
            "Fishr",
            "train",
            {"lr": _LR, "wd": _WD, "penalty": SearchDist("log10", 1.0, 4.0, 1000.0)},
        ),
        StudyMethod(
            "groupdro",
            "groupdro",
            "GroupDRO",
            "train",
            {"lr": _LR, "wd": _WD, "eta": SearchDist("log10", -3.0, -1.0, 0.01)},
        ),
    )
}

#: Selection rules the study can apply (irm_bench.selection): the authors' rule on the
#: validation split of the training environments, and the oracle on a held-out draw of
#: the test split (``split == "test_holdout"``). Leave-one-out would retrain every model
#: once per environment and is not run.
UNIT_TEST_RULES = ("training_domain", "test_domain")

#: Methods whose published numbers exist (Aubin et al. 2021's table).
PUBLISHED_METHODS = ("erm", "irmv1", "andmask", "iga", "oracle")


@dataclass(frozen=True)
class Preset:
    """Protocol sizes: examples per environment and split, steps, trials, data seeds."""

    n_samples: int
    n_iterations: int
    n_trials: int
    n_data_seeds: int


#: ``full``: the paper's protocol (``reproduce_results.sh``); ``quick``: the default run.
PRESETS: dict[str, Preset] = {
    "full": Preset(n_samples=10_000, n_iterations=10_000, n_trials=20, n_data_seeds=50),
    "quick": Preset(n_samples=1_000, n_iterations=1_000, n_trials=4, n_data_seeds=3),
}


@dataclass(frozen=True)
class UnitTestsConfig:
    """The validated ``unit_tests`` config section (see config.yaml for each key)."""

    tasks: tuple[str, ...]
    methods: tuple[str, ...]
    preset: str
    dim_inv: int
    dim_spu: int
    n_envs: int
    n_samples: int
    n_iterations: int
    n_trials: int
    n_data_seeds: int
    seed: int
    search: Mapping[str, Mapping[str, SearchDist]]
    seeds_per_chunk: int = 2

    def protocol(self) -> str:
        """``aubin2021-full`` for the paper's protocol, else ``unit-tests-<preset>``
        (``-custom`` when sizes or dimensions were overridden)."""
        paper = dataclasses.astuple(PRESETS["full"]) == (
            self.n_samples,
            self.n_iterations,
            self.n_trials,
            self.n_data_seeds,
        ) and (self.dim_inv, self.dim_spu, self.n_envs) == (5, 5, 3)
        if paper:
            return "aubin2021-full"
        sizes = (self.n_samples, self.n_iterations, self.n_trials, self.n_data_seeds)
        custom = sizes != dataclasses.astuple(PRESETS[self.preset])
        return f"unit-tests-{self.preset}" + ("-custom" if custom else "")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> UnitTestsConfig:
        """Build from the ``unit_tests`` mapping; raise ``ValueError`` naming a bad key."""
        problems = config_problems(section)
        if problems:
            raise ValueError(problems[0])
        preset = PRESETS[section.get("preset", "quick")]
        sizes = {
            f.name: section.get(f.name) or getattr(preset, f.name)
            for f in dataclasses.fields(Preset)
        }
        search = {name: dict(m.search) for name, m in STUDY_METHODS.items()}
        for method, hparams in (section.get("search") or {}).items():
            for hp, bounds in hparams.items():
                search[method][hp] = dataclasses.replace(
                    search[method][hp], low=float(bounds["low"]), high=float(bounds["high"])
                )
        return cls(
            tasks=tuple(section.get("tasks") or UNIT_TEST_TASKS),
            methods=tuple(section.get("methods") or STUDY_METHODS),
            preset=section.get("preset", "quick"),
            dim_inv=int(section.get("dim_inv", 5)),
            dim_spu=int(section.get("dim_spu", 5)),
            n_envs=int(section.get("n_envs", 3)),
            seed=int(section.get("seed", 0)),
            search=search,
            seeds_per_chunk=int(section.get("seeds_per_chunk", 2)),
            **{k: int(v) for k, v in sizes.items()},
        )


def config_problems(section: Mapping[str, Any]) -> list[str]:
    """One-line problems of a ``unit_tests`` section beyond the JSON schema.

    Unknown task or method (did-you-mean), a dimension < 1, more environments than a
    task defines, a search bound for an unknown method or hyper-parameter, ``low > high``.
    """
    from irm_bench.registry import lookup

    problems: list[str] = []
    for key, known in (("tasks", UNIT_TEST_TASKS), ("methods", STUDY_METHODS)):
        for i, name in enumerate(section.get(key) or ()):
            try:
                lookup(known, name, key[:-1])
            except KeyError as err:
                problems.append(f"config key 'unit_tests.{key}[{i}]': {err.args[0]}")
    for key in ("dim_inv", "dim_spu"):
        value = section.get(key, 5)
        if not isinstance(value, int) or value < 1:
            problems.append(
                f"config key 'unit_tests.{key}': expected an integer >= 1, found {value!r}"
            )
    n_envs = section.get("n_envs", 3)
    for name in section.get("tasks") or UNIT_TEST_TASKS:
        cls = UNIT_TEST_TASKS.get(name)
        if cls is not None and cls.max_envs is not None and n_envs > cls.max_envs:
            problems.append(
                f"config key 'unit_tests.n_envs': {name} defines {cls.max_envs} environments, "
                f"found {n_envs}"
            )
    for method, hparams in (section.get("search") or {}).items():
        if method not in STUDY_METHODS:
            problems.append(
                f"config key 'unit_tests.search.{method}': unknown method; known: "
                f"{', '.join(STUDY_METHODS)}"
            )
            continue
        for hp, bounds in (hparams or {}).items():
            where = f"unit_tests.search.{method}.{hp}"
            if hp not in STUDY_METHODS[method].search:
                known = ", ".join(STUDY_METHODS[method].search)
                problems.append(f"config key '{where}': unknown hyper-parameter; known: {known}")
            elif bounds["low"] > bounds["high"]:
                problems.append(
                    f"config key '{where}': expected low <= high, found low {bounds['low']} > "
                    f"high {bounds['high']}"
                )
    return problems


def trial_hparams(config: UnitTestsConfig, method: str) -> list[dict[str, float]]:
    """The ``n_trials`` hyper-parameter draws of ``method``: trial 0 the defaults, each
    other value from its own seed (adding a hyper-parameter leaves the others' draws)."""
    search = config.search[method]
    trials = [{hp: dist.default for hp, dist in search.items()}]
    for k in range(1, config.n_trials):
        trials.append(
            {
                hp: dist.draw(
                    numpy_generator(
                        derive_seed(study="unit_tests", seed=config.seed, trial=k, hparam=hp)
                    )
                )
                for hp, dist in search.items()
            }
        )
    return trials


def trial_batch(method: str, trials: list[dict[str, float]], n_envs: int) -> trainer.TrialBatch:
    """Map the trials' hyper-parameters onto the trainer's per-trial settings."""

    def col(name: str, default: float = 0.0) -> torch.Tensor:
        return torch.tensor([t.get(name, default) for t in trials], dtype=torch.float64)

    risk_scale, penalty_scale = col("risk_scale", 1.0), col("penalty")
    hparams: list[Any] = [NoHparams()] * len(trials)
    if method == "irmv1":
        lam = col("irm_lambda")
        # (1 - l) mean_e R_e + l sum_e g_e^2 = (1 - l) risk_term + l E mean_e g_e^2
        risk_scale, penalty_scale = 1.0 - lam, lam * n_envs
    elif method == "andmask":
        hparams = [ANDMaskHparams(tau=t["tau"]) for t in trials]
    elif method == "groupdro":
        hparams = [GroupDROHparams(eta=t["eta"]) for t in trials]
    return trainer.TrialBatch(
        lr=col("lr"),
        wd=col("wd"),
        risk_scale=risk_scale,
        penalty_scale=penalty_scale,
        method_hparams=tuple(hparams),
    )


def job_data(
    config: UnitTestsConfig, task_name: str, data_seed: int, train_split: str
) -> tuple[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """One data seed's ``{train, validation, test, test_holdout}: (x (E, n, d), y (E, n))``
    and task type.

    The task's constants and every split's draws come from seeds of (task, data seed,
    environment, role), so all methods see the same examples (the oracle's train and
    validation examples are the same draws with the spurious features shuffled).
    ``test_holdout`` is a second draw of the ``test`` split from its own seeds (the
    test-domain oracle's validation data); adding it changed no other draw.
    """
    ident = {"study": "unit_tests", "seed": config.seed, "task": task_name, "data_seed": data_seed}
    task = make_task(
        task_name,
        config.dim_inv,
        config.dim_spu,
        config.n_envs,
        torch_generator(derive_seed(**ident, purpose="constants")),
    )
    out = {}
    roles = (
        ("train", train_split),
        ("validation", train_split),
        ("test", "test"),
        ("test_holdout", "test"),
    )
    for role, split in roles:
        xs, ys = [], []
        for env in task.envs:
            gen = torch_generator(derive_seed(**ident, env=env, role=role))
            x, y = task.sample(config.n_samples, env, split, gen)
            xs.append(x)
            ys.append(y)
        out[role] = (torch.stack(xs), torch.stack(ys))
    return task.task, out


def run_job(config: UnitTestsConfig, task_name: str, method: str) -> pd.DataFrame:
    """Train every (trial, data seed) model of one (task, method) job; tidy errors.

    Returns
    -------
    pandas.DataFrame
        One row per (trial, data seed, split, environment): ``protocol, task, method,
        trial, data_seed, split, env, error, diverged, hparams`` (JSON of the trial's
        values).
    """
    study = STUDY_METHODS[method]
    spec = get_method(study.registry)
    trials = trial_hparams(config, method)
    batch = trial_batch(method, trials, config.n_envs)
    data = [job_data(config, task_name, s, study.train_split) for s in range(config.n_data_seeds)]
    task_type = data[0][0]

    def stack(role: str) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            torch.stack([d[1][role][0] for d in data]),
            torch.stack([d[1][role][1] for d in data]),
        )

    init_gens = [
        torch_generator(derive_seed(study="unit_tests", seed=config.seed, trial=k, purpose="init"))
        for k in range(config.n_trials)
    ]
    dim = config.dim_inv + config.dim_spu
    models = trainer.init_models(config.n_trials, config.n_data_seeds, dim, init_gens)
    x, y = stack("train")
    # Train a few data seeds at a time: models of different seeds never interact, and
    # small chunks keep the (K, S, E n) intermediates in the CPU cache (several times
    # faster per model-step than all 50 seeds at once).
    # From moments (regression), all seeds at once: the cost per step is tiny.
    per_chunk = (
        config.n_data_seeds if trainer.uses_moments(spec, task_type) else config.seeds_per_chunk
    )
    chunks = []
    for start in range(0, config.n_data_seeds, per_chunk):
        rows_s = slice(start, start + per_chunk)
        part = trainer.LinearModels(models.weight[:, rows_s], models.bias[:, rows_s])
        chunks.append(
            trainer.train(spec, batch, part, x[rows_s], y[rows_s], task_type, config.n_iterations)
        )
    models = trainer.LinearModels(
        torch.cat([c.weight for c in chunks], 1),
        torch.cat([c.bias for c in chunks], 1),
        torch.cat([c.diverged for c in chunks], 1),
    )
    rows = []
    envs = [f"E{e}" for e in range(config.n_envs)]
    for role in ("train", "validation", "test", "test_holdout"):
        err = trainer.errors(models, *stack(role), task_type).numpy()
        for k in range(config.n_trials):
            hp = json.dumps(trials[k], sort_keys=True)
            for s in range(config.n_data_seeds):
                diverged = bool(models.diverged[k, s])
                for e, env in enumerate(envs):
                    value = math.nan if diverged else float(err[k, s, e])
                    rows.append((task_name, method, k, s, role, env, value, diverged, hp))
    frame = pd.DataFrame(
        rows,
        columns=[
            "task",
            "method",
            "trial",
            "data_seed",
            "split",
            "env",
            "error",
            "diverged",
            "hparams",
        ],
    )
    frame.insert(0, "protocol", config.protocol())
    return frame
