"""Figures of the SEM study: the paper's Figure 4 and each gridded method's sweep.

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
import pandas as pd
import seaborn as sns

from irm_bench.io import save_figure
from irm_bench.sem.aggregate import format_hparam, selected_fits, with_hparam

ERROR_LABELS = {"causal_error": "causal error", "noncausal_error": "non-causal error"}


def _label(method: str) -> str:
    """The registry's display name (the config name for an unregistered one)."""
    from irm_bench.methods import METHODS

    spec = METHODS.get(method)
    return spec.label if spec is not None else method


def _colour(method: str, fallback: object) -> object:
    from irm_bench.methods import METHODS

    spec = METHODS.get(method)
    return spec.colour if spec is not None else fallback


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
    methods = list(dict.fromkeys(draws["method"]))
    sel["method"] = sel["method"].map(_label)
    setups = list(dict.fromkeys(draws["setup"]))
    families = [f for f in ("F", "P") if any(s.startswith(f) for s in setups)]
    n_cols = max(sum(s.startswith(f) for s in setups) for f in families)
    order = [_label(m) for m in methods]
    fallback = sns.color_palette("tab10", len(order))
    palette = {_label(m): _colour(m, fallback[i]) for i, m in enumerate(methods)}
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
    """Causal and non-causal error (mean +- std over draws) at every grid point of every
    method with a grid (IRMv1's λ, V-REx's, Fishr's λ, GroupDRO's eta, ...).

    One row of panels per method, one panel per setup; x is the grid point in grid
    order (categorical: ``inf`` is IRMv1's ``reg = 0``), y is log scale. A config
    without any gridded method gets a one-line placeholder figure.
    """
    gridded = with_hparam(draws)
    gridded = gridded[(gridded["hparam"] != "") & ~gridded["diverged"].astype(bool)].copy()
    methods = list(dict.fromkeys(gridded["method"]))
    if not methods:
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no method with a grid among sem.methods", ha="center")
        _save(fig, paths)
        return
    setups = list(dict.fromkeys(draws["setup"]))
    gridded["point"] = [
        format_hparam(h, v)
        for h, v in zip(gridded["hparam"], gridded["hparam_value"], strict=True)
    ]
    long = gridded.melt(
        id_vars=["setup", "method", "draw", "point"],
        value_vars=list(ERROR_LABELS),
        var_name="error",
        value_name="value",
    )
    long["error"] = long["error"].map(ERROR_LABELS)
    n_rows, n_cols = len(methods), len(setups)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(2.6 * n_cols + 0.6, 2.4 * n_rows), squeeze=False, sharey=True
    )
    for r, method in enumerate(methods):
        labels = list(dict.fromkeys(gridded.loc[gridded["method"] == method, "point"]))
        for c, setup in enumerate(setups):
            ax = axes[r, c]
            sub = long[(long["setup"] == setup) & (long["method"] == method)]
            sns.pointplot(
                data=sub, x="point", y="value", hue="error", order=labels,
                errorbar="sd", dodge=0.3, ax=ax, markersize=4, linewidth=1,
            )  # fmt: skip
            ax.set_yscale("log")
            ax.set_title(f"{_label(method)}, {setup}", fontsize=9)
            ax.set_xlabel("λ" if set(gridded.loc[gridded["method"] == method, "hparam"]) == {
                "lambda"} else "grid point")  # fmt: skip
            ax.set_ylabel("error")
            ax.tick_params(axis="x", labelrotation=45)
            if (r, c) != (0, 0) and ax.get_legend() is not None:
                ax.get_legend().remove()
    fig.suptitle("Errors over each method's grid (mean ± std over draws)")
    fig.tight_layout()
    _save(fig, paths)


def make_sem_figures(
    draws_csv: str, errors_paths: Sequence[str], sweep_paths: Sequence[str]
) -> None:
    """Read ``sem_draws.csv`` and draw Figure 4 and the grid sweeps."""
    draws = pd.read_csv(draws_csv)
    plot_sem_errors(draws, errors_paths)
    plot_lambda_sweep(draws, sweep_paths)
