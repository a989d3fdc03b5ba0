"""Figures of the Colored MNIST study: λ sweep and training curves.

Published reference values (IRM paper, Table 1, train / test accuracy in %, from
:mod:`irm_bench.scorecard`) are drawn beside ours; accuracies are plotted in percent,
tables keep fractions. Methods are labelled and coloured by their registry entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from irm_bench.cmnist.presets import PAPER_LAMBDA, method_colour, method_label
from irm_bench.io import save_figure
from irm_bench.scorecard import CMNIST_PROTOCOL, PUBLISHED

#: The test-time splits of the curves: environment -> (split, line style).
SPLITS = {
    "env1": ("train", "-"),
    "env2": ("train", "-"),
    "test": ("test", "--"),
    "gray_test": ("gray test", ":"),
}


def _published_irmv1(metric: str) -> float:
    """IRMv1's Table 1 value (%) of ``metric`` in the scorecard."""
    (p,) = [
        p
        for p in PUBLISHED
        if (p.study, p.protocol, p.method, p.metric)
        == ("cmnist", CMNIST_PROTOCOL, "irmv1", metric)
    ]
    return p.value


def _save(fig: plt.Figure, paths: Sequence[str | Path]) -> None:
    for path in paths:
        save_figure(fig, path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def _reference_lines(ax: plt.Axes) -> None:
    ax.axhline(75, color="0.4", ls="--", lw=0.8, label="optimal invariant (75%)")
    ax.axhline(50, color="0.6", ls=":", lw=0.8, label="random guessing (50%)")


def plot_lambda_sweep(
    sweep_csv: str | Path, runs_csv: str | Path, paths: Sequence[str | Path]
) -> None:
    """Train and test accuracy vs penalty weight λ: mean ± std (ddof 0) over restarts.

    Each restart is a faint dot; λ = 0 sits on a symmetric-log axis (linear below 1).
    The published IRMv1 result (λ = 91257.19) is drawn as stars.
    """
    sweep = pd.read_csv(sweep_csv)
    runs = pd.read_csv(runs_csv)
    runs = runs[(runs["study"] == "sweep") & ~runs["diverged"].astype(bool)]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for col, colour, label in (
        ("train_acc", "tab:orange", "train"),
        ("test_acc", "tab:purple", "test"),
    ):
        if len(sweep):
            ax.errorbar(
                sweep["lambda"],
                100 * sweep[f"{col}_mean"],
                yerr=100 * sweep[f"{col}_std"],
                color=colour,
                marker="o",
                capsize=3,
                label=f"{label} (mean ± std)",
            )
            ax.scatter(runs["lambda"], 100 * runs[col], color=colour, alpha=0.3, s=10)
    pub = [_published_irmv1("train_acc"), _published_irmv1("test_acc")]
    ax.scatter([PAPER_LAMBDA] * 2, pub, marker="*", s=120, color="k", zorder=5,
               label="paper IRMv1 (train, test)")  # fmt: skip
    _reference_lines(ax)
    ax.set_xscale("symlog", linthresh=1.0)
    top = max([PAPER_LAMBDA, *sweep["lambda"].tolist()])
    ax.set_xlim(-0.5, 3 * top)  # no negative decades; room for the rightmost point
    ax.set_xlabel("penalty weight λ")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    n = int(sweep["n_restarts"].max()) if len(sweep) else 0
    ax.set_title(f"Colored MNIST: IRMv1 λ sweep ({n} restart(s) per λ)")
    ax.legend(fontsize=7, loc="lower left")
    _save(fig, paths)


def plot_curves(curves_csv: str | Path, paths: Sequence[str | Path]) -> None:
    """Accuracy, risk and IRMv1 penalty vs step for the Table 1 runs.

    Train = mean of the two training environments; lines are means over restarts; the
    dotted vertical line marks IRMv1's anneal step (λ switches on).
    """
    curves = pd.read_csv(curves_csv)
    table1 = curves[curves["study"] == "table1"]
    curves = table1 if len(table1) else curves
    curves = curves.assign(
        split=curves["environment"].map({env: split for env, (split, _) in SPLITS.items()})
    )
    grouped = (
        curves.groupby(["method", "lambda", "restart", "step", "split", "metric"])["value"]
        .mean()
        .groupby(["method", "lambda", "step", "split", "metric"])
        .mean()
        .reset_index()
    )
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, metric in zip(axes, ("accuracy", "risk", "penalty"), strict=True):
        for (method, lam), sub in grouped[grouped["metric"] == metric].groupby(
            ["method", "lambda"]
        ):
            label = method_label(method)
            if method == "irmv1" and lam != PAPER_LAMBDA:
                label += f" λ={lam:g}"
            for split, ls in dict(SPLITS.values()).items():
                line = sub[sub["split"] == split]
                if line.empty:
                    continue
                scale = 100 if metric == "accuracy" else 1
                ax.plot(line["step"], scale * line["value"], ls=ls,
                        color=method_colour(method), label=f"{label} {split}")  # fmt: skip
        anneal = curves.loc[curves["method"] == "irmv1", "anneal_steps"]
        if len(anneal) and anneal.iloc[0] > 0:
            ax.axvline(anneal.iloc[0], color="k", ls=":", lw=0.8, label="IRMv1 anneal step")
        ax.set_xlabel("step")
        ax.set_title(metric)
        if metric == "accuracy":
            _reference_lines(ax)
            ax.set_ylabel("accuracy (%)")
        if metric == "penalty":
            ax.set_yscale("log")
    n = curves.groupby("method")["restart"].nunique().max() if len(curves) else 0
    axes[0].legend(fontsize=6)
    fig.suptitle(f"Colored MNIST training curves (mean over {n} restart(s))")
    _save(fig, paths)
