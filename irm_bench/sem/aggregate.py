"""Aggregate the SEM study's per-draw results into the Figure 4 and lambda-sweep tables.

Means and standard deviations (``ddof=0``, as ``numpy.std`` in the reference
``plot.py``) run over draws whose fit did not diverge; diverged fits are counted in
``n_diverged`` and never averaged in. For a method with a grid the Figure 4 row is the fit selected
by validation MSE on the last environment; a draw whose every grid fit diverged has no
selected fit and counts as diverged. Every method with a grid (``hparam`` column: IRMv1's
and the generic trainer's methods) gets the same selection and sweep tables, keyed on
(setup, method, hyper-parameter value).
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

    For methods without a grid every row is selected. Draws without a selected fit
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


def with_hparam(draws: pd.DataFrame) -> pd.DataFrame:
    """``draws`` with the ``hparam`` / ``hparam_value`` columns of each grid point.

    Tables written before those columns existed get them from IRMv1's ``lambda`` (the
    only gridded method then); methods without a grid have ``hparam = ""``.
    """
    if "hparam" in draws:
        return draws.assign(hparam=draws["hparam"].fillna("").astype(str))
    irm = draws["method"] == "irmv1"
    return draws.assign(
        hparam=np.where(irm, "lambda", ""),
        hparam_value=np.where(irm, draws["lambda"], np.nan),
    )


def format_hparam(name: str, value: float) -> str:
    """A grid point as text: ``99999`` for a penalty weight λ, ``eta=0.1`` otherwise."""
    text = format_lambda(float(value))
    return text if name == "lambda" else f"{name}={text}"


def error_table(draws: pd.DataFrame, methods_order: Sequence[str] | None = None) -> pd.DataFrame:
    """``sem_errors.csv``: one row per (setup, method) of selected fits.

    Columns: protocol, setup, method, n_draws, n_diverged, causal_error_mean/std,
    noncausal_error_mean/std, selected_lambda_counts (methods with a grid: how often
    each grid point was selected, e.g. ``inf:3;99999:120``, ``eta=0.1:7;eta=1:193``).
    """
    sel = selected_fits(draws)
    table = (
        sel.groupby(["setup", "method"], sort=False)[["draw", "diverged", *ERROR_COLUMNS]]
        .apply(_error_stats)
        .reset_index()
    )
    counts = selected_lambda_table(draws)
    text = (
        counts.groupby(["setup", "method"], sort=False)
        .apply(
            lambda g: ";".join(
                f"{format_hparam(h, v)}:{c}"
                for h, v, c in zip(g["hparam"], g["hparam_value"], g["count"], strict=True)
            ),
            include_groups=False,
        )
        .rename("selected_lambda_counts")
        .reset_index()
        if len(counts)
        else pd.DataFrame(columns=["setup", "method", "selected_lambda_counts"])
    )
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


GRID_KEYS = ["setup", "method", "hparam", "hparam_value"]


def _gridded(draws: pd.DataFrame) -> pd.DataFrame:
    draws = with_hparam(draws)
    return draws[draws["hparam"] != ""]


def selected_lambda_table(draws: pd.DataFrame) -> pd.DataFrame:
    """``sem_selected_lambda.csv``: how often each grid point was selected, per setup and
    method with a grid (IRMv1's λ, V-REx's and Fishr's λ, GroupDRO's eta, ...).

    Columns: protocol, setup, method, hparam, hparam_value, reg, lambda, count (every
    grid point, zeros included; ``reg`` is IRMv1's, NaN for the others).
    """
    gridded = _gridded(draws)
    grid = gridded[[*GRID_KEYS, "reg", "lambda"]].drop_duplicates(GRID_KEYS)
    chosen = gridded[gridded["selected"].astype(bool)].groupby(GRID_KEYS).size().rename("count")
    out = grid.merge(chosen.reset_index(), on=GRID_KEYS, how="left")
    out["count"] = out["count"].fillna(0).astype(int)
    out.insert(0, "protocol", PROTOCOL)
    return out.reset_index(drop=True)


def lambda_sweep_table(draws: pd.DataFrame) -> pd.DataFrame:
    """``sem_lambda_sweep.csv``: errors of every method with a grid at every grid point
    (selected or not), in grid order.

    Columns: protocol, setup, method, hparam, hparam_value, reg, lambda, n_draws,
    n_diverged, causal_error_mean/std, noncausal_error_mean/std.
    """
    gridded = _gridded(draws)
    cols = ["draw", "diverged", *ERROR_COLUMNS]
    table = (
        gridded.groupby([*GRID_KEYS, "reg", "lambda"], sort=False, dropna=False)[cols]
        .apply(_error_stats)
        .reset_index()
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
    holdout_paths: Sequence[str] = (),
    rules: Sequence[str] = ("last_environment",),
) -> None:
    """Combine per-job files into the study tables, written atomically.

    ``outputs`` maps ``draws``, ``coefficients``, ``errors``, ``selected_lambda`` and
    ``lambda_sweep`` to their paths, and optionally ``selection_records`` and
    ``selection`` (the sweep records of both protocols and :func:`selection_table`).
    """
    from irm_bench.io import write_csv

    draws = combine_jobs(draw_paths)
    coefs = combine_jobs(coefficient_paths)
    if "selection" in outputs:
        holdout = [h for h in map(pd.read_csv, holdout_paths) if len(h)]
        records = sweep_records(draws, pd.concat(holdout, ignore_index=True) if holdout else None)
        write_csv(records, outputs["selection_records"])
        write_csv(selection_table(records, rules, methods_order), outputs["selection"])
    write_csv(draws, outputs["draws"])
    write_csv(coefs, outputs["coefficients"])
    write_csv(error_table(draws, methods_order), outputs["errors"])
    write_csv(selected_lambda_table(draws), outputs["selected_lambda"])
    write_csv(lambda_sweep_table(draws), outputs["lambda_sweep"])


#: Columns of a study's selection table (``<study>_selection.csv``).
SELECTION_COLUMNS = (
    "study", "protocol", "setup", "rule", "method", "metric", "mean", "std", "n_restarts",
    "n_unselected", "setting", "selected_counts", "trained_on", "validated_on", "tested_on",
    "published_rule",
)  # fmt: skip

#: The rule of the paper's Figure 4 (its reference code): the scorecard's only rule.
PUBLISHED_RULE = ("irm-paper-sem", "last_environment")


def _setting_labels(hparam: pd.Series, value: pd.Series) -> pd.Series:
    name = hparam.fillna("").astype(str)
    return pd.Series(
        [format_hparam(h, v) if h else "-" for h, v in zip(name, value, strict=True)],
        index=hparam.index,
        dtype=object,
    )


def sweep_records(draws: pd.DataFrame, holdout: pd.DataFrame | None = None) -> pd.DataFrame:
    """Registry sweep records (:data:`irm_bench.selection.RECORD_COLUMNS`, plus ``setup``)
    of both SEM protocols; ``score`` is minus the error (larger is better), ``restart``
    the draw.

    ``draws`` (``sem_draws.csv``) gives the reference protocol: ``last_environment``
    rows from ``val_mse``, ``test`` rows ``causal_error`` / ``noncausal_error``;
    ``holdout`` (the jobs' hold-out records) gives its own protocol's rows as they are.
    """
    draws = with_hparam(draws)
    base = draws.assign(setting=_setting_labels(draws["hparam"], draws["hparam_value"]))
    keep = ["protocol", "setup", "method", "setting", "draw"]
    parts = [
        base[keep].assign(role="last_environment", environment="last", score=-base["val_mse"])
    ]
    for col in ERROR_COLUMNS:
        parts.append(base[keep].assign(role="test", environment=col, score=-base[col]))
    if holdout is not None and len(holdout):
        h = holdout.assign(
            setting=_setting_labels(holdout["hparam"], holdout["hparam_value"]),
            environment=holdout["environment"].astype(str),
            score=-holdout["error"],
        )
        parts.append(h[[*keep, "role", "environment", "score"]])
    out = pd.concat(parts, ignore_index=True).rename(columns={"draw": "restart"})
    return out.assign(left_out="", step=0)


def _protocol_description(protocol: str, rule: str) -> tuple[str, str, str]:
    """(trained on, validated on, tested on) of a SEM protocol and rule, in words."""
    tested = "causal / non-causal coefficient error (parameter estimation)"
    if protocol == PROTOCOL:
        trained = "environments 1..E-1, all samples (ERM, ICP: every environment)"
        return trained, "environment E (last), all samples", tested
    fraction = protocol.rsplit("-", 1)[-1]
    trained = (
        f"environments 1..E-1 less a {fraction} hold-out (ERM, ICP: also environment E "
        "less its hold-out)"
    )
    validated = {
        "training_domain": f"the {fraction} hold-out of environments 1..E-1",
        "test_domain": f"the {fraction} hold-out of environment E (last)",
        "last_environment": "environment E (last), all samples",
    }[rule]
    return trained, validated, tested


def selection_table(
    records: pd.DataFrame,
    rules: Sequence[str],
    methods_order: Sequence[str] | None = None,
) -> pd.DataFrame:
    """``sem_selection.csv``: method x rule, per protocol, setup and error metric.

    Each draw chooses its own grid point (``per_restart``: the reference's per-draw
    rule); mean and std (ddof 0) over draws with a usable fit. The reference protocol
    has only ``last_environment``; the hold-out protocol every rule of ``rules``. Rows of
    two protocols are never averaged: :func:`irm_bench.selection.select` is called per
    protocol.
    """
    from irm_bench.selection import select

    rows = []
    for (protocol, setup), part in records.groupby(["protocol", "setup"], sort=False):
        for rule in rules:
            if protocol == PROTOCOL and rule != "last_environment":
                continue  # no held-out data in the reference protocol
            trained, validated, tested = _protocol_description(protocol, rule)
            for metric in ERROR_COLUMNS:
                recs = part[(part["role"] != "test") | (part["environment"] == metric)]
                for row in select(recs, rule, per_restart=True, skip_missing=True).to_dict(
                    "records"
                ):
                    rows.append(
                        {
                            "study": "sem",
                            "protocol": protocol,
                            "setup": setup,
                            "rule": rule,
                            "method": row["method"],
                            "metric": metric,
                            "mean": -row["test_mean"],
                            "std": row["test_std"],
                            "n_restarts": row["n_restarts"],
                            "n_unselected": row["n_unselected"],
                            "setting": row["setting"],
                            "selected_counts": row["selected_counts"],
                            "trained_on": trained,
                            "validated_on": validated,
                            "tested_on": tested,
                            "published_rule": (protocol, rule) == PUBLISHED_RULE,
                        }
                    )
    table = pd.DataFrame(rows, columns=list(SELECTION_COLUMNS))
    if not len(table):
        return table
    methods = list(methods_order or dict.fromkeys(table["method"]))
    rank = {r: i for i, r in enumerate(rules)}
    setups = list(dict.fromkeys(table["setup"]))
    table = table.assign(
        _m=table["method"].map(lambda m: methods.index(m) if m in methods else len(methods)),
        _r=table["rule"].map(rank),
        _p=table["protocol"].ne(PROTOCOL),
        _s=table["setup"].map(setups.index),
    )
    table = table.sort_values(["_p", "_s", "_r", "metric", "_m"], kind="stable")
    return table.drop(columns=["_m", "_r", "_p", "_s"]).reset_index(drop=True)
