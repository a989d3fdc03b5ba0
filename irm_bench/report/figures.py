"""The report's figures, drawn from the result tables (never from the runs).

Each ``plot_*`` function takes tidy tables and returns a matplotlib ``Figure``;
:func:`to_svg` turns it into inline SVG (vector in both the HTML and the PDF).
Error bars are the standard deviation over draws / restarts unless a caption says
otherwise; the captions are built in :mod:`irm_bench.report.context` from the same tables.
"""

from __future__ import annotations

import io
import math
import re

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from irm_bench.appendix.motivating import REGRESSIONS, closed_form
from irm_bench.cmnist.pipeline import method_order
from irm_bench.cmnist.presets import ORACLE, method_label
from irm_bench.methods import METHODS
from irm_bench.scorecard import PUBLISHED, SEM_PROTOCOL

#: Display names: each registered method's ``MethodSpec.label``, and the oracle's.
METHOD_LABELS = {
    **{name: spec.label for name, spec in METHODS.items()},
    ORACLE: method_label(ORACLE),
}
METHOD_COLORS = {"erm": "#4c72b0", "icp": "#dd8452", "irmv1": "#55a868", "grayscale": "#8172b3"}
#: Floor for zero errors on the log-scale axes of Figure 4.
LOG_FLOOR = 1e-6

_STYLE = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "irm-bench",
}


def to_svg(fig: Figure, prefix: str) -> str:
    """Inline SVG of ``fig`` with every id prefixed by ``prefix`` (ids stay unique when
    several figures share one HTML page). The figure is closed."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = re.sub(r'id="([^"]+)"', rf'id="{prefix}-\1"', svg)
    svg = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", svg)
    # Natural size in pt (fonts stay at their size); CSS shrinks it to the page width.
    return svg


def lambda_label(value: float) -> str:
    """λ as printed in tables and on axes: ``∞`` for the pure-penalty objective."""
    if math.isinf(value):
        return "∞"
    return f"{value:.6g}"


def _lambda_positions(values: np.ndarray) -> tuple[np.ndarray, list[float], list[str]]:
    """x positions on a log10 axis; 0 goes one decade left of the smallest positive λ,
    ∞ one decade right of the largest finite λ. A tick closer than 0.3 decades to a
    power of ten gets no label (it is annotated by the caller instead)."""
    vals = np.asarray(values, dtype=float)
    finite_pos = vals[np.isfinite(vals) & (vals > 0)]
    lo = math.floor(np.log10(finite_pos.min())) if finite_pos.size else 0
    hi = math.ceil(np.log10(finite_pos.max())) if finite_pos.size else 0
    pos = np.where(
        vals == 0, lo - 1, np.where(np.isinf(vals), hi + 1, np.log10(np.where(vals > 0, vals, 1)))
    )
    uniq = sorted(set(vals.tolist()))
    ticks = [float(p) for p in sorted(set(pos.tolist()))]
    labels = [_axis_label(v) for v in uniq]
    for k, v in enumerate(uniq):
        crowded = any(abs(ticks[k] - t) < 0.3 for j, t in enumerate(ticks) if j != k)
        if crowded and 0 < v < math.inf and not _is_power_of_ten(v):
            labels[k] = ""
    return pos, ticks, labels


def _is_power_of_ten(value: float) -> bool:
    exponent = math.log10(value)
    return abs(exponent - round(exponent)) < 1e-9


def _axis_label(value: float) -> str:
    if value == 0 or math.isinf(value):
        return lambda_label(value)
    if _is_power_of_ten(value) and value >= 10:
        return f"$10^{{{round(math.log10(value))}}}$"
    return lambda_label(value)


def method_label(method: str) -> str:
    """Display name: the method registry's label, else this module's table, else the name."""
    from irm_bench.methods import METHODS

    spec = METHODS.get(method)
    return spec.label if spec is not None else METHOD_LABELS.get(method, method)


def method_colour(method: str) -> str:
    """Colour: the method registry's, else this module's table, else grey."""
    from irm_bench.methods import METHODS

    spec = METHODS.get(method)
    return spec.colour if spec is not None else METHOD_COLORS.get(method, "0.5")


def plot_sem_errors(errors: pd.DataFrame) -> Figure:
    """Figure 4 regenerated: causal and non-causal error per setup and method.

    Bars are means over non-diverged SEM draws, error bars ± std (clipped at the floor
    of the log axis); black ticks are the reference values of the public code.
    """
    published = {
        (p.setup, p.method, p.metric): p.value
        for p in PUBLISHED
        if p.study == "sem" and p.protocol == SEM_PROTOCOL
    }
    groups = [("F", "fully observed"), ("P", "partially observed")]
    metrics = [("causal_error", "causal error"), ("noncausal_error", "non-causal error")]
    methods = list(dict.fromkeys(errors["method"]))  # every method, in table order
    present = [g for g in groups if errors["setup"].str.startswith(g[0]).any()]
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(
            len(metrics), len(present), figsize=(3.3 * len(present), 4.6), squeeze=False
        )
        for col, (letter, title) in enumerate(present):
            sub = errors[errors["setup"].str.startswith(letter)]
            setups = list(dict.fromkeys(sub["setup"]))
            x = np.arange(len(setups))
            width = 0.8 / max(len(methods), 1)
            for row, (metric, label) in enumerate(metrics):
                ax = axes[row, col]
                for k, method in enumerate(methods):
                    m = sub[sub["method"] == method].set_index("setup").reindex(setups)
                    mean = m[f"{metric}_mean"].to_numpy(float)
                    std = m[f"{metric}_std"].to_numpy(float)
                    shown = np.maximum(mean, LOG_FLOOR)
                    lower = np.clip(shown - np.maximum(mean - std, LOG_FLOOR), 0, None)
                    xs = x + (k - (len(methods) - 1) / 2) * width
                    ax.bar(
                        xs,
                        shown,
                        width,
                        yerr=[lower, std],
                        color=method_colour(method),
                        label=method_label(method),
                        error_kw={"elinewidth": 0.7, "capsize": 1.5},
                    )
                    ref = [published.get((s, method, metric)) for s in setups]
                    for xi, r in zip(xs, ref, strict=True):
                        if r is not None:
                            ax.hlines(
                                max(r, LOG_FLOOR), xi - width / 2, xi + width / 2, "k", lw=1.2
                            )
                ax.set_yscale("log")
                ax.set_ylim(LOG_FLOOR / 2, 10)
                ax.set_xticks(x, setups)
                ax.set_ylabel(label)
                if row == 0:
                    ax.set_title(f"{title} ({letter})")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        handles.append(plt.Line2D([], [], color="k", lw=1.2))
        labels.append("reference code")
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def plot_sem_lambda_sweep(sweep: pd.DataFrame) -> Figure:
    """Causal and non-causal error vs each gridded method's hyper-parameter (IRMv1's λ,
    V-REx's and Fishr's λ, GroupDRO's η, ...): one row of panels per method, one panel
    per setup, mean ± std. Tables without a ``method`` column are IRMv1's."""
    if "method" not in sweep:
        sweep = sweep.assign(method="irmv1", hparam="lambda", hparam_value=sweep["lambda"])
    setups = list(dict.fromkeys(sweep["setup"]))
    methods = list(dict.fromkeys(sweep["method"]))
    nrows, ncols = len(methods), len(setups)
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(
            nrows, ncols, figsize=(1.75 * ncols + 0.6, 1.9 * nrows + 0.5), squeeze=False
        )
        for row, method in enumerate(methods):
            for ax, setup in zip(axes[row], setups, strict=True):
                sub = sweep[(sweep["setup"] == setup) & (sweep["method"] == method)]
                sub = sub.sort_values("hparam_value")
                pos, ticks, labels = _lambda_positions(sub["hparam_value"].to_numpy(float))
                for metric, color, label in (
                    ("causal_error", "#c44e52", "causal"),
                    ("noncausal_error", "#4c72b0", "non-causal"),
                ):
                    mean = sub[f"{metric}_mean"].to_numpy(float)
                    std = sub[f"{metric}_std"].to_numpy(float)
                    ax.plot(
                        pos, np.maximum(mean, LOG_FLOOR), "o-", ms=2.5, color=color, label=label
                    )
                    ax.fill_between(
                        pos,
                        np.maximum(mean - std, LOG_FLOOR),
                        np.maximum(mean + std, LOG_FLOOR),
                        color=color,
                        alpha=0.2,
                        lw=0,
                    )
                ax.set_yscale("log")
                ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
                ax.set_xticks(ticks, labels, rotation=45 if len(ticks) > 4 else 0)
                ax.set_title(f"{method_label(method)}: {setup}")
                name = str(sub["hparam"].iloc[0]) if len(sub) else "lambda"
                ax.set_xlabel("λ" if name == "lambda" else {"eta": "η"}.get(name, name))
            axes[row, 0].set_ylabel("error")
        handles, names = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncol=2, frameon=False)
        fig.tight_layout(rect=(0, 0.07 / nrows, 1, 1))
    return fig


def plot_cmnist_lambda_sweep(sweep: pd.DataFrame) -> Figure:
    """Train and test accuracy (%) of IRMv1 vs λ, mean ± std over restarts."""
    sub = sweep.sort_values("lambda")
    pos, ticks, labels = _lambda_positions(sub["lambda"].to_numpy(float))
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(4.6, 2.8))
        for metric, color, label in (
            ("train_acc", "#4c72b0", "train (environments 1, 2)"),
            ("test_acc", "#c44e52", "test (environment 3)"),
        ):
            ax.errorbar(
                pos,
                100 * sub[f"{metric}_mean"].to_numpy(float),
                yerr=100 * sub[f"{metric}_std"].to_numpy(float),
                fmt="o-",
                ms=3,
                capsize=2,
                color=color,
                label=label,
            )
        ax.axhline(75, color="0.4", ls="--", lw=0.8)
        ax.text(pos.min(), 75.5, "optimal invariant 75 %", fontsize=6, color="0.3")
        ax.axhline(50, color="0.4", ls=":", lw=0.8)
        ax.text(pos.min(), 50.5, "random guessing 50 %", fontsize=6, color="0.3")
        ax.set_xticks(ticks, labels, rotation=45 if len(ticks) > 6 else 0)
        for x, v in zip(pos, sub["lambda"], strict=True):
            if 0 < v < math.inf and not _is_power_of_ten(v):
                ax.axvline(x, color="0.6", ls=":", lw=0.8)
                ax.text(
                    x,
                    98,
                    f"λ = {lambda_label(v)}",
                    fontsize=6,
                    ha="center",
                    va="top",
                    color="0.3",
                    bbox={"fc": "white", "ec": "none", "pad": 0.5},
                )
        ax.set_xlabel("penalty weight λ")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.legend(frameon=False, loc="lower left")
        fig.tight_layout()
    return fig


_METRIC_ORDER = ("acc", "accuracy", "risk", "nll", "loss", "penalty")


def _metric_key(name: str) -> tuple[int, str]:
    return (_METRIC_ORDER.index(name) if name in _METRIC_ORDER else len(_METRIC_ORDER), name)


def plot_cmnist_curves(curves: pd.DataFrame, anneal_steps: dict[str, float]) -> Figure:
    """Per-environment metrics vs step, mean ± std over restarts, one column per method.

    Parameters
    ----------
    curves : long table (method, lambda, restart, step, environment, metric, value) of
        one study.
    anneal_steps : method → step at which the penalty weight switches to λ (marked by
        a dashed vertical line); methods without a penalty are absent.
    """
    metrics = sorted(set(curves["metric"]), key=_metric_key)
    methods = sorted(set(curves["method"]), key=lambda m: (method_order(m), m))
    envs = list(dict.fromkeys(curves["environment"]))
    palette = plt.get_cmap("tab10")
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(
            len(metrics),
            len(methods),
            figsize=(2.2 * len(methods) + 0.6, 1.6 * len(metrics) + 0.6),
            squeeze=False,
            sharex="col",
        )
        for c, method in enumerate(methods):
            for r, metric in enumerate(metrics):
                ax = axes[r, c]
                sub = curves[(curves["method"] == method) & (curves["metric"] == metric)]
                for k, env in enumerate(envs):
                    g = sub[sub["environment"] == env].groupby("step")["value"]
                    if g.ngroups == 0:
                        continue
                    mean, std = g.mean(), g.std(ddof=0).fillna(0.0)
                    scale = 100.0 if metric in ("acc", "accuracy") else 1.0
                    ax.plot(mean.index, scale * mean, color=palette(k), lw=1, label=str(env))
                    ax.fill_between(
                        mean.index,
                        scale * (mean - std),
                        scale * (mean + std),
                        color=palette(k),
                        alpha=0.2,
                        lw=0,
                    )
                if method in anneal_steps:
                    ax.axvline(anneal_steps[method], color="k", ls="--", lw=0.7)
                if metric == "penalty" and (sub["value"] > 0).any():
                    ax.set_yscale("log")
                if r == 0:
                    ax.set_title(method_label(method))
                if c == 0:
                    ax.set_ylabel(
                        "accuracy (%)"
                        if metric in ("acc", "accuracy")
                        else metric.replace("_", " ")
                    )
                if r == len(metrics) - 1:
                    ax.set_xlabel("step")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        if anneal_steps:
            handles.append(plt.Line2D([], [], color="k", ls="--", lw=0.7))
            labels.append("anneal step")
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def plot_minimal_trajectory(trajectory: pd.DataFrame) -> Figure:
    """φ over the SGD steps of the appendix example, with the invariant solution dashed."""
    cols = sorted(c for c in trajectory.columns if re.fullmatch(r"phi_\d+", c))
    half = len(cols) // 2
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(4.6, 2.6))
        for k, col in enumerate(cols):
            kind = "x" if k < half else "z"
            ax.plot(trajectory["step"], trajectory[col], lw=1.2, label=f"φ{k} ({kind})")
        ax.axhline(1.0, color="k", ls="--", lw=0.7)
        ax.axhline(0.0, color="k", ls=":", lw=0.7)
        ax.set_xlabel("SGD step")
        ax.set_ylabel("φ")
        ax.legend(frameon=False, ncol=2)
        fig.tight_layout()
    return fig


def plot_motivating(frame: pd.DataFrame) -> Figure:
    """Fitted coefficients against σ: closed forms (lines), least squares on generated
    data (dots) and the IRMv1 solution trained on two environments (crosses at the
    training σ, dotted level across σ)."""
    ls = frame[frame["source"] == "least_squares"]
    irm = frame[frame["source"] == "irmv1"]
    grid = np.linspace(0.05, max(3.0, float(frame["sigma"].max())), 200)
    titles = {"x1": "Y on X₁", "x2": "Y on X₂", "x1x2": "Y on (X₁, X₂)"}
    colors = {"x1": "#4c72b0", "x2": "#c44e52"}
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(1, 3, figsize=(6.8, 2.4), sharey=True)
        for ax, (name, cols) in zip(axes, REGRESSIONS.items(), strict=True):
            exact = closed_form(grid, name)
            for j, col in enumerate(cols):
                feat = ("x1", "x2")[col]
                sub = "₁" if feat == "x1" else "₂"
                ax.plot(grid, exact[:, j], color=colors[feat], lw=1.2, label=f"α{sub} closed form")
                pts = ls[(ls["regression"] == name) & (ls["feature"] == feat)]
                ax.plot(
                    pts["sigma"],
                    pts["value"],
                    "o",
                    ms=3,
                    color=colors[feat],
                    label=f"α{sub} least squares",
                )
            if name == "x1x2" and not irm.empty:
                for feat in ("x1", "x2"):
                    pts = irm[irm["feature"] == feat]
                    sub = "₁" if feat == "x1" else "₂"
                    ax.axhline(pts["value"].iloc[0], color=colors[feat], ls=":", lw=1)
                    ax.plot(
                        pts["sigma"],
                        pts["value"],
                        "x",
                        ms=6,
                        mew=1.5,
                        color="k",
                        label="IRMv1 (trained σ)" if feat == "x1" else None,
                    )
            ax.set_title(titles[name])
            ax.set_xlabel("σ")
            ax.set_ylim(-0.1, 1.15)
            ax.legend(frameon=False, fontsize=5.5, loc="center right")
        axes[0].set_ylabel("coefficient")
        fig.tight_layout()
    return fig
