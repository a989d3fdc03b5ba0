"""The linear SEM study of the IRM paper (Section 5.1, Figure 4): one job's worth.

A job fits every configured method on a contiguous block of SEM draws of one setup.
Each draw gets its own SEM (weights and scramble) and samples, seeded by
``derive_seed(study="sem", setup, draw, seed)``; the methods see only the draws'
per-environment moments. Results come back as two tidy frames: one row per
(draw, method, grid point) with causal / non-causal errors, and the coefficients in the
unscrambled basis ``S @ w_hat``, one row per coordinate.

Two protocols, never mixed (:mod:`irm_bench.selection`):

``irm-paper-sem`` (:data:`PROTOCOL`)
    the reference code's: fit on all samples of the training environments (all but the
    last; ERM and ICP pool every environment, as the reference), select per draw on the
    whole last environment (rule ``last_environment``). Figure 4 and the scorecard.
``sem-holdout-<fraction>`` (:func:`holdout_protocol`)
    the first ``sem.selection.holdout_draws`` draws fitted again with a fraction of every
    environment held out, split by the draw's seed: the training environments' held-out
    rows validate (rule ``training_domain``), the last environment's held-out rows are
    the oracle's (``test_domain``), and its other rows replace it in the fit (so ERM and
    ICP never see a held-out row); the whole last environment also scores
    ``last_environment``. Reported: the causal / non-causal errors of the chosen fit.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from irm_bench.envs.moments import LinearMoments
from irm_bench.envs.sem import SETUP_CODES, ChainSEM, SEMSetup, causal_noncausal_errors
from irm_bench.methods import build_method, check_study, get_method
from irm_bench.methods.base import LinearFit, LinearMethod, hparams_from_mapping
from irm_bench.methods.icp import ICPConfig
from irm_bench.methods.irm_linear import IRMv1Config
from irm_bench.seeds import derive_seed, numpy_generator
from irm_bench.selection import holdout_split, rule_problems
from irm_bench.sem.trainer import GradientSEMConfig, SEMGradientMethod

PROTOCOL = "irm-paper-sem"
#: Rules the SEM study can apply (leave-one-out is not run: see :class:`SEMSelection`).
SEM_RULES = ("last_environment", "training_domain", "test_domain")
#: Why leave-one-out is not run in the SEM study (the config error and the report say it).
SEM_NO_LEAVE_ONE_OUT = (
    "the SEM study has two training environments, so leaving one out trains on a single "
    "environment, where every invariance penalty (IRMv1, V-REx, Fishr) vanishes or is "
    "constant and GroupDRO is ERM: the rule would tune degenerate fits"
)


def holdout_protocol(fraction: float) -> str:
    """The hold-out protocol's tag, e.g. ``sem-holdout-0.2``."""
    return f"sem-holdout-{fraction:g}"


@dataclass(frozen=True)
class SEMSelection:
    """The ``sem.selection`` block.

    Attributes
    ----------
    validation_fraction
        Fraction of every environment's samples held out in the hold-out protocol (in
        (0, 1); DomainBed holds out 20 %).
    holdout_draws
        Draws per setup (the first ones) fitted again under the hold-out protocol;
        ``None`` for all. Each costs one more fit of every method.
    rules
        Selection rules of the study's selection table (:data:`SEM_RULES`).
    """

    validation_fraction: float = 0.2
    holdout_draws: int | None = 50
    rules: tuple[str, ...] = SEM_RULES

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        if not 0 < self.validation_fraction < 1:
            raise ValueError(
                "config key 'sem.selection.validation_fraction': expected a number in (0, 1), "
                f"found {self.validation_fraction}"
            )
        if self.holdout_draws is not None and self.holdout_draws < 0:
            raise ValueError(
                "config key 'sem.selection.holdout_draws': expected an integer >= 0 or null, "
                f"found {self.holdout_draws}"
            )
        problems = rule_problems(
            self.rules,
            "sem.selection.rules",
            2,
            SEM_RULES,
            {"leave_one_out": SEM_NO_LEAVE_ONE_OUT},
        )
        if problems:
            raise ValueError(problems[0])


@dataclass(frozen=True)
class SEMStudyConfig:
    """The ``sem`` section of the workflow config (see ``config.yaml`` for each key)."""

    setups: tuple[str, ...] = SETUP_CODES
    n_draws: int = 200
    draws_per_job: int = 200
    n_per_env: int = 1000
    env_scales: tuple[float, ...] = (0.2, 2.0, 5.0)
    dim: int = 10
    seed: int = 0
    methods: tuple[str, ...] = ("erm", "icp", "irmv1", "vrex", "fishr", "groupdro")
    icp: ICPConfig = field(default_factory=ICPConfig)
    irmv1: IRMv1Config = field(default_factory=IRMv1Config)
    #: Settings of the gradient methods without a closed-form SEM fit, by name (the
    #: ``sem.<method>`` blocks); a method missing here trains with the defaults.
    gradient: Mapping[str, GradientSEMConfig] = field(default_factory=dict)
    selection: SEMSelection = field(default_factory=SEMSelection)

    def __post_init__(self) -> None:
        for i, name in enumerate(self.methods):
            try:
                spec = get_method(name)
            except KeyError as err:
                raise ValueError(f"config key 'sem.methods[{i}]': {err.args[0]}") from None
            check_study(spec, "sem", f"sem.methods[{i}]")
        for code in self.setups:
            SEMSetup.from_code(code)
        if len(self.env_scales) < 3:
            raise ValueError("sem.env_scales needs >= 3 environments (train on all but last)")
        if self.n_draws < 1 or self.draws_per_job < 1 or self.n_per_env < 2:
            raise ValueError("sem.n_draws, sem.draws_per_job must be >= 1, n_per_env >= 2")

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any], device: str = "cpu") -> SEMStudyConfig:
        """Build from the validated ``sem`` config section (``enabled`` is ignored)."""
        from irm_bench.methods import METHODS

        values = {k: v for k, v in section.items() if k != "enabled"}
        selection = hparams_from_mapping(
            SEMSelection, values.pop("selection", None) or {}, "sem.selection"
        )
        icp = hparams_from_mapping(ICPConfig, values.pop("icp", {}), "sem.icp")
        irm = {**values.pop("irmv1", {}), "device": device}
        irmv1 = hparams_from_mapping(IRMv1Config, irm, "sem.irmv1")
        gradient = {}
        for name in [k for k in values if k in METHODS]:
            spec = METHODS[name]
            block = values.pop(name)
            if spec.linear_fit is not None or spec.objective is None:
                raise ValueError(f"unknown key 'sem.{name}' (method {name} has no SEM block)")
            gradient[name] = GradientSEMConfig.from_mapping(
                spec, block or {}, f"sem.{name}", device
            )
        for name in values.get("methods", ()):
            spec = METHODS.get(name)
            if spec is not None and spec.linear_fit is None and name not in gradient:
                gradient[name] = GradientSEMConfig.from_mapping(spec, {}, f"sem.{name}", device)
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return hparams_from_mapping(
            cls,
            {**values, "icp": icp, "irmv1": irmv1, "gradient": gradient, "selection": selection},
            "sem",
        )

    def build(self, name: str) -> LinearMethod:
        """The SEM fit of method ``name``: its closed form (``linear_fit``: ERM, ICP,
        IRMv1's batched fast path), else the generic gradient trainer."""
        spec = get_method(name)
        check_study(spec, "sem", "sem.methods")
        if spec.linear_fit is not None:
            return build_method(name, self)
        return SEMGradientMethod(spec, self.gradient.get(name))

    @property
    def n_chunks(self) -> int:
        """Jobs per setup."""
        return -(-self.n_draws // self.draws_per_job)

    def chunk_draws(self, chunk: int) -> range:
        """The draw indices of job ``chunk`` (``0 <= chunk < n_chunks``)."""
        if not 0 <= chunk < self.n_chunks:
            raise ValueError(f"chunk must lie in [0, {self.n_chunks}), found {chunk}")
        start = chunk * self.draws_per_job
        return range(start, min(start + self.draws_per_job, self.n_draws))


def draw_seed(setup: str, draw: int, seed: int) -> int:
    """The seed of one SEM draw (weights, scramble and samples)."""
    return derive_seed(study="sem", setup=setup, draw=int(draw), seed=int(seed))


def draw_environments(
    setup: str, draw: int, config: SEMStudyConfig
) -> tuple[ChainSEM, list[tuple[np.ndarray, np.ndarray]], int]:
    """Draw one SEM and its environments' samples; returns ``(sem, [(X, y)], seed)``."""
    seed = draw_seed(setup, draw, config.seed)
    rng = numpy_generator(seed)
    sem = ChainSEM.draw(setup, config.dim, rng)
    return sem, [sem.sample(config.n_per_env, e, rng) for e in config.env_scales], seed


def split_seed(data_seed: int, env: int) -> int:
    """Seed of environment ``env``'s hold-out split of the draw with seed ``data_seed``."""
    return derive_seed(study="sem", purpose="holdout", data_seed=int(data_seed), env=int(env))


def holdout_environments(
    envs: Sequence[tuple[np.ndarray, np.ndarray]], data_seed: int, fraction: float
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]:
    """Split every environment into (fit, held-out) rows, seeded by the draw's seed.

    Returns ``(fit, held_out)``, one ``(X, y)`` pair per environment each; the same seed
    gives the same rows (:func:`irm_bench.selection.holdout_split`).
    """
    fit, held = [], []
    for e, (x, y) in enumerate(envs):
        keep, out = holdout_split(len(y), fraction, numpy_generator(split_seed(data_seed, e)))
        fit.append((x[keep], y[keep]))
        held.append((x[out], y[out]))
    return fit, held


def _job_moments(
    envs: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]], fourth: bool, split: bool
) -> tuple[LinearMoments, tuple[LinearMoments, LinearMoments] | None]:
    """Stacked moments of several draws' environments, and the even / odd halves."""
    full = LinearMoments.stack([LinearMoments.from_samples(e, fourth=fourth) for e in envs])
    if not split:
        return full, None
    halves = tuple(
        LinearMoments.stack([LinearMoments.from_samples(e, rows=rows) for e in envs])
        for rows in ("even", "odd")
    )
    return full, halves


def _holdout_records(
    config: SEMStudyConfig,
    methods: Mapping[str, LinearMethod],
    setup: str,
    draws: Sequence[int],
    samples: Sequence[tuple[ChainSEM, list[tuple[np.ndarray, np.ndarray]], int]],
    fourth: bool,
    split: bool,
    timings: dict[str, float],
) -> pd.DataFrame:
    """Fit ``methods`` under the hold-out protocol; tidy errors for the selection rules.

    One row per (draw, method, grid point, scored quantity): ``role`` ``validation``
    (MSE on a training environment's held-out rows, ``environment`` its index),
    ``test_holdout`` (MSE on the last environment's held-out rows), ``last_environment``
    (MSE on the whole last environment) or ``test`` (``environment`` ``causal_error`` /
    ``noncausal_error``); ``error`` is lower-is-better.
    """
    if not draws:
        return pd.DataFrame(columns=HOLDOUT_COLUMNS)
    start = time.perf_counter()
    fraction = config.selection.validation_fraction
    fit_envs, held_envs, whole_last = [], [], []
    for _, envs, seed in samples:
        fit, held = holdout_environments(envs, seed, fraction)
        fit_envs.append(fit)
        held_envs.append(held)
        whole_last.append([envs[-1]])
    moments, halves = _job_moments(fit_envs, fourth, split)
    held = LinearMoments.stack([LinearMoments.from_samples(h) for h in held_envs])
    last = LinearMoments.stack([LinearMoments.from_samples(w) for w in whole_last])
    scrambles = np.stack([s.scramble for s, _, _ in samples])
    solution = samples[0][0].solution()
    timings["holdout_data"] = time.perf_counter() - start
    n_env = moments.n_envs
    parts = []
    for name, method in methods.items():
        start = time.perf_counter()
        fit = method.fit(moments, halves)
        timings[f"holdout_{name}"] = time.perf_counter() - start
        coef = fit.coefficients
        n_draws, n_grid = coef.shape[:2]
        unscrambled = np.einsum("nij,ngj->ngi", scrambles, coef)
        causal, noncausal = causal_noncausal_errors(unscrambled, solution)
        held_mse = held.mse(coef)  # (D, G, E)
        scored = [("validation", str(e), held_mse[..., e]) for e in range(n_env - 1)]
        scored += [
            ("test_holdout", str(n_env - 1), held_mse[..., n_env - 1]),
            ("last_environment", str(n_env - 1), last.mse(coef)[..., 0]),
            ("test", "causal_error", causal),
            ("test", "noncausal_error", noncausal),
        ]
        values = np.asarray(fit.grid_columns.get(fit.hparam, (np.nan,) * n_grid), dtype=float)
        for role, env, err in scored:
            parts.append(
                pd.DataFrame(
                    {
                        "draw": np.repeat(np.asarray(draws), n_grid),
                        "method": name,
                        "hparam": fit.hparam,
                        "hparam_value": np.tile(values, n_draws),
                        "role": role,
                        "environment": env,
                        "error": np.where(fit.diverged, np.nan, err).reshape(-1),
                    }
                )
            )
    out = pd.concat(parts, ignore_index=True)
    out.insert(0, "protocol", holdout_protocol(fraction))
    out.insert(1, "setup", setup)
    return out[list(HOLDOUT_COLUMNS)]


#: Columns of a job's hold-out protocol records (``<setup>_chunk<k>_holdout.csv``).
HOLDOUT_COLUMNS = (
    "protocol", "setup", "draw", "method", "hparam", "hparam_value", "role", "environment",
    "error",
)  # fmt: skip


def _fit_rows(
    method: str,
    fit: LinearFit,
    moments: LinearMoments,
    scrambles: np.ndarray,
    solution: np.ndarray,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per (draw, grid point) columns and the unscrambled coefficients ``(D, G, d)``."""
    unscrambled = np.einsum("nij,ngj->ngi", scrambles, fit.coefficients)
    causal, noncausal = causal_noncausal_errors(unscrambled, solution)
    val = moments.envs([moments.n_envs - 1])
    val_mse = val.mse(fit.coefficients)[..., 0]
    n_draws, n_grid = causal.shape
    selected = np.arange(n_grid)[None, :] == fit.selected[:, None]
    cols = {
        "method": np.full((n_draws, n_grid), method, dtype=object),
        "grid_index": np.broadcast_to(np.arange(n_grid), (n_draws, n_grid)),
        "selected": selected,
        "causal_error": causal,
        "noncausal_error": noncausal,
        "val_mse": val_mse,
        "diverged": fit.diverged,
        "diverged_step": fit.diverged_step,
    }
    return cols, unscrambled


def run_sem_job(
    config: SEMStudyConfig, setup: str, draws: Sequence[int]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Fit every configured method on ``draws`` of ``setup``.

    Returns
    -------
    draws_frame
        One row per (draw, method, grid point): protocol, setup, draw, seed, method, reg,
        lambda, selected, causal_error, noncausal_error, val_mse (last environment),
        diverged, diverged_step (``<NA>`` unless diverged).
    coefficients_frame
        Long form: protocol, setup, draw, method, reg, lambda, selected, index,
        coefficient (unscrambled basis), true_coefficient.
    timings
        Seconds spent per phase (``data``, each method).
    """
    timings: dict[str, float] = {}
    start = time.perf_counter()
    split = config.irmv1.penalty_estimator == "split" and "irmv1" in config.methods
    methods = {name: config.build(name) for name in config.methods}
    fourth = any(getattr(m, "needs_fourth_moments", False) for m in methods.values())
    samples = [draw_environments(setup, draw, config) for draw in draws]
    sems = [s for s, _, _ in samples]
    seeds = [seed for _, _, seed in samples]
    moments, halves = _job_moments([envs for _, envs, _ in samples], fourth, split)
    scrambles = np.stack([s.scramble for s in sems])
    solution = sems[0].solution()
    timings["data"] = time.perf_counter() - start

    row_parts, coef_parts = [], []
    for name, method in methods.items():
        start = time.perf_counter()
        fit = method.fit(moments, halves)
        timings[name] = time.perf_counter() - start
        cols, unscrambled = _fit_rows(name, fit, moments, scrambles, solution)
        n_draws, n_grid = unscrambled.shape[:2]

        def column(key: str, fit: LinearFit = fit, n_grid: int = n_grid) -> np.ndarray:
            return np.asarray(fit.grid_columns.get(key, (np.nan,) * n_grid), dtype=float)

        reg, lam = column("reg"), column("lambda")
        value = column(fit.hparam) if fit.hparam else np.full(n_grid, np.nan)
        frame = pd.DataFrame({k: np.asarray(v).reshape(-1) for k, v in cols.items()})
        frame.insert(0, "draw", np.repeat(np.asarray(draws), n_grid))
        frame.insert(1, "seed", np.repeat(np.asarray(seeds, dtype=np.int64), n_grid))
        frame["reg"] = reg[frame["grid_index"]]
        frame["lambda"] = lam[frame["grid_index"]]
        frame["hparam"] = fit.hparam
        frame["hparam_value"] = value[frame["grid_index"]]
        row_parts.append(frame)
        d = unscrambled.shape[-1]
        coef = pd.DataFrame(
            {
                "draw": np.repeat(np.asarray(draws), n_grid * d),
                "method": name,
                "reg": np.tile(np.repeat(reg, d), n_draws),
                "lambda": np.tile(np.repeat(lam, d), n_draws),
                "selected": np.repeat(cols["selected"].reshape(-1), d),
                "index": np.tile(np.arange(d), n_draws * n_grid),
                "coefficient": unscrambled.reshape(-1),
                "true_coefficient": np.tile(solution, n_draws * n_grid),
                "hparam": fit.hparam,
                "hparam_value": np.tile(np.repeat(value, d), n_draws),
            }
        )
        coef_parts.append(coef)

    rows = pd.concat(row_parts, ignore_index=True)
    rows.insert(0, "protocol", PROTOCOL)
    rows.insert(1, "setup", setup)
    rows["diverged_step"] = rows["diverged_step"].where(rows["diverged"]).astype("Int64")
    rows = rows[
        [
            "protocol", "setup", "draw", "seed", "method", "reg", "lambda", "selected",
            "causal_error", "noncausal_error", "val_mse", "diverged", "diverged_step",
            "hparam", "hparam_value",
        ]
    ]  # fmt: skip
    coefs = pd.concat(coef_parts, ignore_index=True)
    coefs.insert(0, "protocol", PROTOCOL)
    coefs.insert(1, "setup", setup)
    return rows, coefs, timings


def run_holdout_job(
    config: SEMStudyConfig, setup: str, draws: Sequence[int]
) -> tuple[pd.DataFrame, dict[str, float]]:
    """The hold-out protocol on those of ``draws`` below ``sem.selection.holdout_draws``.

    Returns the records (:data:`HOLDOUT_COLUMNS`, see :func:`_holdout_records`; empty
    when no draw qualifies) and the seconds per phase (``holdout_data``,
    ``holdout_<method>``).
    """
    limit = config.selection.holdout_draws
    draws = [d for d in draws if limit is None or d < limit]
    timings: dict[str, float] = {}
    split = config.irmv1.penalty_estimator == "split" and "irmv1" in config.methods
    methods = {name: config.build(name) for name in config.methods}
    fourth = any(getattr(m, "needs_fourth_moments", False) for m in methods.values())
    samples = [draw_environments(setup, draw, config) for draw in draws]
    frame = _holdout_records(config, methods, setup, draws, samples, fourth, split, timings)
    return frame, timings


#: Measured single-thread CPU cost per model-step (benchmarks/sem_speed.py, rounded
#: up): IRMv1's closed-form trainer, and the generic trainer (Fishr's, the slowest).
SECONDS_PER_MODEL_STEP = {"irmv1": 2e-6, "generic": 1e-5}


def fit_runtime_minutes(section: Mapping[str, Any], margin: float = 5.0) -> int:
    """Scheduler time limit (minutes, at least 10) of one ``sem_fit`` job.

    ``section`` is the validated ``sem`` config section; every gradient method adds
    ``draws_per_job * grid size * steps`` model-steps at its measured cost.
    """
    config = SEMStudyConfig.from_mapping(section)
    seconds = 0.0
    for name in config.methods:
        if name == "irmv1":
            irm = config.irmv1
            seconds += len(irm.reg_grid) * irm.steps * SECONDS_PER_MODEL_STEP["irmv1"]
        elif name in config.gradient:
            block = config.gradient[name]
            seconds += len(block.grid) * block.steps * SECONDS_PER_MODEL_STEP["generic"]
    limit = config.selection.holdout_draws
    refits = config.draws_per_job if limit is None else min(limit, config.draws_per_job)
    return max(10, int((config.draws_per_job + refits) * seconds * margin / 60))


def set_threads(threads: int) -> None:
    """Use ``threads`` intra-op threads (the Snakemake rule's ``threads``)."""
    torch.set_num_threads(max(1, int(threads)))


def provenance(section: Mapping[str, Any], device: str) -> dict[str, Any]:
    """Git commit, package versions, device and a hash of the config section."""
    import platform

    import scipy

    from irm_bench.provenance import config_hash, head_commit

    return {
        "git_commit": head_commit(),
        "config_sha256": config_hash(dict(section)),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "versions": {
            "torch": torch.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "pandas": pd.__version__,
        },
    }


def run_sem_job_to_files(
    section: Mapping[str, Any],
    device: str,
    setup: str,
    chunk: int,
    draws_csv: str,
    coefficients_csv: str,
    holdout_csv: str,
    info_json: str,
    threads: int = 1,
) -> None:
    """Run job ``chunk`` of ``setup`` and write its four files atomically.

    ``section`` is the validated ``sem`` config section; ``device`` the config's
    ``device`` value (``auto``, ``cpu`` or ``cuda``).
    """
    import logging

    from irm_bench.devices import resolve_device
    from irm_bench.io import write_csv, write_json

    set_threads(threads)
    resolved = str(resolve_device(device))
    config = SEMStudyConfig.from_mapping(section, device=resolved)
    draws = list(config.chunk_draws(int(chunk)))
    log = logging.getLogger("irm_bench.sem")
    log.info("setup %s chunk %s: draws %d..%d on %s", setup, chunk, draws[0], draws[-1], resolved)
    rows, coefs, timings = run_sem_job(config, setup, draws)
    holdout, holdout_timings = run_holdout_job(config, setup, draws)
    timings.update(holdout_timings)
    log.info("timings (s): %s", timings)
    n_div = int(rows["diverged"].sum())
    if n_div:
        log.warning("%d fits diverged (recorded with diverged=True)", n_div)
    write_csv(rows, draws_csv)
    write_csv(coefs, coefficients_csv)
    write_csv(holdout, holdout_csv)
    info = {
        "protocol": PROTOCOL,
        "holdout_protocol": holdout_protocol(config.selection.validation_fraction),
        "setup": setup,
        "chunk": int(chunk),
        "draws": draws,
        "timings_s": timings,
        "provenance": provenance(section, resolved),
    }
    write_json(info, info_json)
