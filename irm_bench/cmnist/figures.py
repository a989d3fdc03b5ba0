"""Figures of the Colored MNIST study: λ sweep and training curves.

Published reference values (IRM paper, Table 1, train / test accuracy in %) are drawn
beside ours; accuracies are plotted in percent, tables keep fractions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from irm_bench.cmnist.presets import PAPER_LAMBDA
from irm_bench.io import save_figure

#: IRM paper, Table 1: (train mean, train std, test mean, test std), in %.
PUBLISHED_TABLE1 = {
    "erm": (87.4, 0.2, 17.1, 0.6),
    "irmv1": (70.8, 0.9, 66.9, 2.5),
    "grayscale": (73.5, 0.2, 73.0, 0.4),
}
METHOD_LABELS = {"erm": "ERM", "irmv1": "IRMv1", "grayscale": "grayscale oracle"}
COLOURS = {"erm": "tab:red", "irmv1": "tab:blue", "grayscale": "tab:green"}


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
    pub = PUBLISHED_TABLE1["irmv1"]
    ax.scatter([PAPER_LAMBDA] * 2, [pub[0], pub[2]], marker="*", s=120, color="k", zorder=5,
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
        split=curves["environment"].map({"env1": "train", "env2": "train", "test": "test"})
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
            label = METHOD_LABELS.get(method, method)
            if method == "irmv1" and lam != PAPER_LAMBDA:
                label += f" λ={lam:g}"
            for split, ls in (("train", "-"), ("test", "--")):
                line = sub[sub["split"] == split]
                scale = 100 if metric == "accuracy" else 1
                ax.plot(line["step"], scale * line["value"], ls=ls,
                        color=COLOURS.get(method), label=f"{label} {split}")  # fmt: skip
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
