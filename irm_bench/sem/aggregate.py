"""Aggregate the SEM study's per-draw results into the Figure 4 and lambda-sweep tables.

Means and standard deviations (``ddof=0``, as ``numpy.std`` in the reference
``plot.py``) run over draws whose fit did not diverge; diverged fits are counted in
``n_diverged`` and never averaged in. For IRMv1 the Figure 4 row is the fit selected
by validation MSE on the last environment; a draw whose every grid fit diverged has no
selected fit and counts as diverged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from irm_bench.sem.study import PROTOCOL

ERROR_COLUMNS = ("causal_error", "noncausal_error")


def format_lambda(value: float) -> str:
    """Compact text for a penalty weight: ``inf``, ``99999``, ``9``."""
    return "inf" if math.isinf(value) else f"{value:.6g}"


def _error_stats(group: pd.DataFrame) -> pd.Series:
    ok = group[~group["diverged"].astype(bool)]
    out = {"n_draws": int(group["draw"].nunique()), "n_diverged": int(group["diverged"].sum())}
    for col in ERROR_COLUMNS:
        out[f"{col}_mean"] = float(ok[col].mean()) if len(ok) else math.nan
        out[f"{col}_std"] = float(ok[col].std(ddof=0)) if len(ok) else math.nan
    return pd.Series(out)


def selected_fits(draws: pd.DataFrame) -> pd.DataFrame:
    """One row per (setup, draw, method): the selected fit, or a diverged placeholder.

    For methods without a grid every row is selected. IRMv1 draws without a selected fit
    (all grid points diverged) get a row with ``diverged=True`` and NaN errors.
    """
    chosen = draws[draws["selected"].astype(bool)]
    keys = ["setup", "draw", "method"]
    missing = draws[[*keys, "protocol", "seed"]].drop_duplicates(keys)
    missing = missing.merge(chosen[keys], on=keys, how="left", indicator=True)
    missing = missing[missing["_merge"] == "left_only"].drop(columns="_merge")
    if len(missing):
        missing = missing.assign(diverged=True, causal_error=np.nan, noncausal_error=np.nan)
    return pd.concat([chosen, missing], ignore_index=True)


def error_table(draws: pd.DataFrame, methods_order: Sequence[str] | None = None) -> pd.DataFrame:
    """``sem_errors.csv``: one row per (setup, method) of selected fits.

    Columns: protocol, setup, method, n_draws, n_diverged, causal_error_mean/std,
    noncausal_error_mean/std, selected_lambda_counts (IRMv1 only, e.g. ``inf:3;99999:120``).
    """
    sel = selected_fits(draws)
    table = (
        sel.groupby(["setup", "method"], sort=False)[["draw", "diverged", *ERROR_COLUMNS]]
        .apply(_error_stats)
        .reset_index()
    )
    counts = selected_lambda_table(draws)
    text = (
        counts.groupby("setup", sort=False)
        .apply(
            lambda g: ";".join(
                f"{format_lambda(lam)}:{c}" for lam, c in zip(g["lambda"], g["count"], strict=True)
            ),
            include_groups=False,
        )
        .rename("selected_lambda_counts")
        .reset_index()
        if len(counts)
        else pd.DataFrame(columns=["setup", "selected_lambda_counts"])
    )
    text["method"] = "irmv1"
    table = table.merge(text, on=["setup", "method"], how="left")
    table["selected_lambda_counts"] = table["selected_lambda_counts"].fillna("")
    table.insert(0, "protocol", PROTOCOL)
    table = _order(table, draws, methods_order)
    for col in ("n_draws", "n_diverged"):
        table[col] = table[col].astype(int)
    return table


def _order(table: pd.DataFrame, draws: pd.DataFrame, methods_order) -> pd.DataFrame:
    setups = list(dict.fromkeys(draws["setup"]))
    methods = list(methods_order or dict.fromkeys(draws["method"]))
    table = table.assign(
        _s=table["setup"].map(setups.index),
        _m=table["method"].map(lambda m: methods.index(m) if m in methods else len(methods)),
    )
    return table.sort_values(["_s", "_m"]).drop(columns=["_s", "_m"]).reset_index(drop=True)


def selected_lambda_table(draws: pd.DataFrame) -> pd.DataFrame:
    """``sem_selected_lambda.csv``: how often each ``reg`` was selected per setup.

    Columns: protocol, setup, reg, lambda, count (every grid point, zeros included).
    """
    irm = draws[draws["method"] == "irmv1"]
    grid = irm[["setup", "reg", "lambda"]].drop_duplicates()
    chosen = irm[irm["selected"].astype(bool)].groupby(["setup", "reg"]).size().rename("count")
    out = grid.merge(chosen.reset_index(), on=["setup", "reg"], how="left")
    out["count"] = out["count"].fillna(0).astype(int)
    out.insert(0, "protocol", PROTOCOL)
    return out.reset_index(drop=True)


def lambda_sweep_table(draws: pd.DataFrame) -> pd.DataFrame:
    """``sem_lambda_sweep.csv``: IRMv1 errors at every grid point (selected or not).

    Columns: protocol, setup, reg, lambda, n_draws, n_diverged, causal_error_mean/std,
    noncausal_error_mean/std.
    """
    irm = draws[draws["method"] == "irmv1"]
    cols = ["draw", "diverged", *ERROR_COLUMNS]
    table = (
        irm.groupby(["setup", "reg", "lambda"], sort=False)[cols].apply(_error_stats).reset_index()
    )
    for col in ("n_draws", "n_diverged"):
        table[col] = table[col].astype(int)
    table.insert(0, "protocol", PROTOCOL)
    return table


def combine_jobs(paths: Sequence[str]) -> pd.DataFrame:
    """Concatenate per-job CSVs in the order given."""
    frames = [pd.read_csv(p) for p in paths]
    out = pd.concat(frames, ignore_index=True)
    if "diverged_step" in out:
        out["diverged_step"] = out["diverged_step"].astype("Int64")
    return out


def aggregate_sem_files(
    draw_paths: Sequence[str],
    coefficient_paths: Sequence[str],
    methods_order: Sequence[str],
    outputs: dict[str, str],
) -> None:
    """Combine per-job files into the study tables, written atomically.

    ``outputs`` maps ``draws``, ``coefficients``, ``errors``, ``selected_lambda`` and
    ``lambda_sweep`` to their paths.
    """
    from irm_bench.io import write_csv

    draws = combine_jobs(draw_paths)
    coefs = combine_jobs(coefficient_paths)
    write_csv(draws, outputs["draws"])
    write_csv(coefs, outputs["coefficients"])
    write_csv(error_table(draws, methods_order), outputs["errors"])
    write_csv(selected_lambda_table(draws), outputs["selected_lambda"])
    write_csv(lambda_sweep_table(draws), outputs["lambda_sweep"])
