"""The unit-test study's figure: test error per task and method (Aubin et al. 2021, Fig. 1).

One panel per task, bars of the selected trial's mean test error per environment with
std (ddof 0, over data seeds) error bars, as the authors' ``plot_results.plot_table``.
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
from irm_bench.unit_tests.protocol import STUDY_METHODS


def plot_unit_tests(table: pd.DataFrame, paths: Sequence[str | Path]) -> None:
    """Draw :func:`figure_unit_tests` and save it to every path."""
    fig = figure_unit_tests(table)
    for path in paths:
        save_figure(fig, path, bbox_inches="tight", dpi=150)
    plt.close(fig)


def figure_unit_tests(table: pd.DataFrame) -> plt.Figure:
    """Bars of ``table`` (:func:`irm_bench.unit_tests.aggregate.results_table`) per
    task (panels), method (x) and environment (hue)."""
    per_env = table[table["env"] != "avg"].copy()
    per_env["label"] = per_env["method"].map(lambda m: STUDY_METHODS[m].label)
    tasks = list(dict.fromkeys(per_env["task"]))
    order = [STUDY_METHODS[m].label for m in STUDY_METHODS if m in set(per_env["method"])]
    fig, axes = plt.subplots(1, len(tasks), figsize=(2.6 * len(tasks), 2.8), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        sub = per_env[per_env["task"] == task]
        present = set(sub["label"])
        labels = [m for m in order if m in present]
        sns.barplot(data=sub, x="label", y="mean", hue="env", order=labels, ax=ax, errorbar=None)
        for patch_group, (_, env_rows) in zip(
            list(ax.containers), sub.groupby("env"), strict=True
        ):
            env_rows = env_rows.set_index("label").reindex(labels)
            xs = [bar.get_x() + bar.get_width() / 2 for bar in patch_group]
            ax.errorbar(
                xs, env_rows["mean"], yerr=env_rows["std"], fmt="none", ecolor="k", capsize=2
            )
        ax.set_title(task)
        ax.set_xlabel("")
        ax.set_ylabel("test error" if ax is axes[0][0] else "")
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
        if ax is not axes[0][-1]:
            ax.get_legend().remove()
    fig.tight_layout()
    return fig
