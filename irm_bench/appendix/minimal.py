"""The IRM paper appendix's minimal example: IRMv1 with the split penalty estimator.

Two environments (``e`` in ``{0.1, 1.0}``, ``n = 10,000`` each) of
:class:`~irm_bench.envs.minimal.MinimalExample`. A linear representation ``phi`` in R^4
(initialised to ones) feeds a dummy scalar classifier ``w = 1``; plain SGD (lr 1e-3,
full batch, 50,000 steps) minimises

    mse_weight * sum_e MSE_e(phi) + sum_e P_e(phi),

where ``P_e`` is the unbiased split estimator (:mod:`irm_bench.penalties`): the product of
the gradients w.r.t. ``w`` on the even and odd positions of a fresh random permutation of
the environment's samples, drawn every step. ``phi`` should approach the invariant
``(1, 1, 0, 0)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from irm_bench.envs.minimal import FEATURE_NAMES, INVARIANT_SOLUTION, MinimalExample
from irm_bench.penalties import get_penalty_estimator, scalar_dummy_penalty_grad
from irm_bench.seeds import derive_seed, torch_generator

PROTOCOL = "irm-paper-appendix"


@dataclass(frozen=True)
class MinimalConfig:
    """The ``minimal`` config section (see ``config.yaml`` for each key)."""

    n_per_env: int = 10_000
    env_scales: tuple[float, ...] = (0.1, 1.0)
    steps: int = 50_000
    lr: float = 1e-3
    mse_weight: float = 1e-5
    log_every: int = 500
    seed: int = 0
    penalty_estimator: str = "split"

    @classmethod
    def from_mapping(cls, section: dict[str, Any]) -> MinimalConfig:
        """Build from the validated ``minimal`` section (``enabled`` is ignored)."""
        values = {k: v for k, v in section.items() if k != "enabled"}
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown key 'minimal.{unknown[0]}'; accepted: {', '.join(sorted(known))}"
            )
        if "env_scales" in values:
            values["env_scales"] = tuple(values["env_scales"])
        return cls(**values)


def run_minimal(config: MinimalConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Train the appendix example; return the trajectory and the final state.

    Returns
    -------
    trajectory
        One row per logged step (0, every ``log_every``, and the last): protocol, seed,
        step, phi_0..phi_3, mse (summed over environments), penalty (summed).
    final
        ``phi``, ``invariant_solution``, seeds, steps, ``diverged``/``diverged_step``,
        and the config.
    """
    data_seed = derive_seed(study="minimal", part="data", seed=config.seed)
    train_seed = derive_seed(study="minimal", part="train", seed=config.seed)
    data_gen = torch_generator(data_seed)
    perm_gen = torch_generator(train_seed)
    example = MinimalExample()
    envs = []
    for e in config.env_scales:
        x, y = (t.double() for t in example.sample(config.n_per_env, e, data_gen))
        n = x.shape[0]
        products = torch.cat([(x[:, :, None] * x[:, None, :]).flatten(1), x * y[:, None]], 1)
        envs.append((x, y, x.T @ x / n, x.T @ y / n, y @ y / n, products))
    phi = torch.ones(2 * example.k, dtype=torch.float64)
    rows: list[dict[str, Any]] = []
    diverged_step = -1
    for step in range(config.steps + 1):
        logging = step % config.log_every == 0 or step == config.steps
        mse = pen = 0.0
        grad = torch.zeros_like(phi)
        for x, y, xx, xy, yy, products in envs:
            xx_a, xy_a, xx_b, xy_b = _random_halves(x, y, xx, xy, products, perm_gen, config)
            p_e, g_e = scalar_dummy_penalty_grad(phi, xx_a, xy_a, xx_b, xy_b)
            grad += config.mse_weight * 2 * (xx @ phi - xy) + g_e
            mse += float(phi @ xx @ phi - 2 * phi @ xy + yy)
            pen += float(p_e)
        new_phi = phi - config.lr * grad  # plain SGD
        # Checked every step (4 numbers), so a blow-up stops at the step it happens
        # and phi keeps its last finite value.
        finite = math.isfinite(mse) and math.isfinite(pen) and bool(torch.isfinite(new_phi).all())
        if logging or not finite:
            row = {"protocol": PROTOCOL, "seed": config.seed, "step": step}
            row.update({f"phi_{i}": float(v) for i, v in enumerate(phi)})
            rows.append({**row, "mse": mse, "penalty": pen})
        if not finite:
            diverged_step = step
            break
        if step == config.steps:
            break
        phi = new_phi
    final = {
        "protocol": PROTOCOL,
        "phi": [float(v) for v in phi],
        "feature_names": list(FEATURE_NAMES),
        "invariant_solution": list(INVARIANT_SOLUTION),
        "seed": config.seed,
        "data_seed": data_seed,
        "train_seed": train_seed,
        "steps": config.steps,
        "diverged": diverged_step >= 0,
        "diverged_step": diverged_step if diverged_step >= 0 else None,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
    }
    return pd.DataFrame(rows), final


def _random_halves(x, y, xx, xy, products, generator, config):
    """Moments of the two halves of a fresh permutation (the estimator's rows).

    ``products``: ``(n, k*k + k)`` per-sample ``x x'`` (flattened) and ``x y``, so a
    half's moments are one gather and one column sum.
    """
    estimator = get_penalty_estimator(config.penalty_estimator)
    if estimator.is_squared:
        return xx, xy, xx, xy
    n, k = x.shape
    first = torch.randperm(n, generator=generator)[0::2]  # even positions of the permutation
    n_a, n_b = first.shape[0], n - first.shape[0]
    sums = products.index_select(0, first).sum(0)
    xx_a, xy_a = sums[: k * k].view(k, k) / n_a, sums[k * k :] / n_a
    # The odd positions are the rest: their moments follow from the full ones.
    xx_b, xy_b = (n * xx - n_a * xx_a) / n_b, (n * xy - n_a * xy_a) / n_b
    return xx_a, xy_a, xx_b, xy_b


def plot_trajectory(trajectory: pd.DataFrame, paths: Sequence[str | Path]) -> None:
    """phi's four coordinates against the SGD step, with the invariant targets dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from irm_bench.io import save_figure

    cols = [f"phi_{i}" for i in range(len(FEATURE_NAMES))]
    long = trajectory.melt(id_vars="step", value_vars=cols, var_name="coordinate")
    long["coordinate"] = long["coordinate"].map(dict(zip(cols, FEATURE_NAMES, strict=True)))
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    sns.lineplot(data=long, x="step", y="value", hue="coordinate", ax=ax)
    for target in sorted(set(INVARIANT_SOLUTION)):
        ax.axhline(target, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("SGD step")
    ax.set_ylabel("φ coordinate")
    ax.set_title("Appendix minimal example: IRMv1 (split estimator)")
    fig.tight_layout()
    for path in paths:
        save_figure(fig, path, bbox_inches="tight", dpi=150)
    plt.close(fig)


def run_minimal_to_files(
    section: dict[str, Any], trajectory_csv: str, final_json: str, threads: int = 1
) -> None:
    """Run the appendix example from its config section; write both files atomically."""
    from irm_bench.io import write_csv, write_json

    torch.set_num_threads(max(1, int(threads)))
    trajectory, final = run_minimal(MinimalConfig.from_mapping(section))
    write_csv(trajectory, trajectory_csv)
    write_json(final, final_json)


def plot_trajectory_file(trajectory_csv: str, paths: Sequence[str | Path]) -> None:
    """Read ``trajectory.csv`` and draw :func:`plot_trajectory`."""
    plot_trajectory(pd.read_csv(trajectory_csv), paths)
