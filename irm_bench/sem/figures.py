"""Figures of the SEM study: the paper's Figure 4 and the IRMv1 lambda sweep.

Figure 4 (Section 5.1) shows, per setup, the mean causal and non-causal error of each
method over SEM draws with standard-deviation error bars on a log scale, fully observed
(F) setups in one panel and partially observed (P) ones in the other; the reference
``plot.py`` draws the same bars (``numpy.std``, ``log=True``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from irm_bench.io import save_figure
from irm_bench.sem.aggregate import format_lambda, selected_fits

METHOD_LABELS = {"erm": "ERM", "icp": "ICP", "irmv1": "IRM"}
ERROR_LABELS = {"causal_error": "causal error", "noncausal_error": "non-causal error"}


def _save(fig: plt.Figure, paths: Sequence[str | Path]) -> None:
    for path in paths:
        save_figure(fig, path, bbox_inches="tight", dpi=150)
    plt.close(fig)


def plot_sem_errors(draws: pd.DataFrame, paths: Sequence[str | Path]) -> None:
    """Figure 4: mean +- std (over non-diverged draws) of each error, log scale.

    Rows: F causal, F non-causal, P causal, P non-causal; columns: the setups of each
    family in the order they appear in ``draws``. Saves to every path in ``paths``.
    """
    sel = selected_fits(draws)
    sel = sel[~sel["diverged"].astype(bool)].copy()
    sel["method"] = sel["method"].map(lambda m: METHOD_LABELS.get(m, m))
    setups = list(dict.fromkeys(draws["setup"]))
    families = [f for f in ("F", "P") if any(s.startswith(f) for s in setups)]
    n_cols = max(sum(s.startswith(f) for s in setups) for f in families)
    order = [METHOD_LABELS.get(m, m) for m in dict.fromkeys(draws["method"])]
    palette = dict(zip(order, sns.color_palette("tab10", len(order)), strict=True))
    fig, axes = plt.subplots(
        2 * len(families), n_cols, figsize=(2.2 * n_cols + 0.6, 2.0 * len(families) * 2),
        squeeze=False,
    )  # fmt: skip
    for f_idx, family in enumerate(families):
        fam_setups = [s for s in setups if s.startswith(family)]
        for e_idx, err in enumerate(ERROR_LABELS):
            row = 2 * f_idx + e_idx
            for col in range(n_cols):
                ax = axes[row, col]
                if col >= len(fam_setups):
                    ax.set_visible(False)
                    continue
                data = sel[sel["setup"] == fam_setups[col]]
                stats = data.groupby("method")[err].agg(["mean", lambda s: s.std(ddof=0)])
                stats.columns = ["mean", "std"]
                stats = stats.reindex(order)
                # Zero means cannot be drawn on a log axis; they show as missing bars.
                heights = stats["mean"].where(stats["mean"] > 0)
                ax.bar(
                    range(len(order)), heights, yerr=stats["std"].where(heights.notna()),
                    color=[palette[m] for m in order], alpha=0.8, capsize=3,
                    hatch=None if e_idx == 0 else "//",
                )  # fmt: skip
                ax.set_yscale("log")
                ax.set_xticks(range(len(order)), order if e_idx == 1 else [""] * len(order))
                if e_idx == 0:
                    ax.set_title(fam_setups[col])
                if col == 0:
                    ax.set_ylabel(f"{family}: {ERROR_LABELS[err]}")
    n_draws = draws.groupby("setup")["draw"].nunique()
    fig.suptitle(
        f"SEM study (IRM paper Fig. 3): mean ± std over {n_draws.min()}"
        + ("" if n_draws.min() == n_draws.max() else f"-{n_draws.max()}")
        + " draws per setup"
    )
    fig.tight_layout()
    _save(fig, paths)


def plot_lambda_sweep(draws: pd.DataFrame, paths: Sequence[str | Path]) -> None:
    """IRMv1 causal and non-causal error (mean +- std over draws) at every grid lambda.

    One panel per setup; x is the penalty weight ``lambda = (1 - reg)/reg`` in grid
    order (categorical, ``inf`` for ``reg = 0``), y is log scale.
    """
    irm = draws[(draws["method"] == "irmv1") & ~draws["diverged"].astype(bool)].copy()
    setups = list(dict.fromkeys(draws["setup"]))
    grid = irm[["reg", "lambda"]].drop_duplicates().sort_values("reg")
    labels = [format_lambda(v) for v in grid["lambda"]]
    irm["lambda_label"] = irm["lambda"].map(format_lambda)
    long = irm.melt(
        id_vars=["setup", "draw", "lambda_label"],
        value_vars=list(ERROR_LABELS),
        var_name="error",
        value_name="value",
    )
    long["error"] = long["error"].map(ERROR_LABELS)
    n_cols = min(4, len(setups))
    n_rows = int(np.ceil(len(setups) / n_cols))
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(3.2 * n_cols, 2.6 * n_rows), squeeze=False, sharey=True
    )
    for i, setup in enumerate(setups):
        ax = axes[i // n_cols, i % n_cols]
        sns.pointplot(
            data=long[long["setup"] == setup], x="lambda_label", y="value", hue="error",
            order=labels, errorbar="sd", dodge=0.3, ax=ax, markersize=4, linewidth=1,
        )  # fmt: skip
        ax.set_yscale("log")
        ax.set_title(setup)
        ax.set_xlabel("penalty weight λ")
        ax.set_ylabel("error")
        ax.tick_params(axis="x", labelrotation=45)
        if i:
            ax.get_legend().remove()
    for j in range(len(setups), n_rows * n_cols):
        axes[j // n_cols, j % n_cols].set_visible(False)
    fig.suptitle("IRMv1 errors over the λ grid (mean ± std over draws)")
    fig.tight_layout()
    _save(fig, paths)


def make_sem_figures(
    draws_csv: str, errors_paths: Sequence[str], sweep_paths: Sequence[str]
) -> None:
    """Read ``sem_draws.csv`` and draw Figure 4 and the lambda sweep."""
    draws = pd.read_csv(draws_csv)
    plot_sem_errors(draws, errors_paths)
    if (draws["method"] == "irmv1").any():
        plot_lambda_sweep(draws, sweep_paths)
    else:  # no IRMv1 in the config: say so rather than leave the target missing
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "IRMv1 not among sem.methods", ha="center")
        _save(fig, sweep_paths)
