"""Model selection and the results table of the unit-test study.

As the authors' ``collect_results.py``: per (task, method), the selected trial is the one
with the lowest sum over training environments of the validation error averaged over
data seeds (trials with a diverged model are skipped); its test error per environment is
reported as mean and standard deviation (ddof 0) over data seeds, and the average row
``env = avg`` is the mean over environments of those means and of those stds.

The choice is the registry's ``training_domain`` rule (:mod:`irm_bench.selection`) on
:func:`sweep_records` (the mean over environments has the same minimiser as the
authors' sum). :func:`selection_table` applies every configured rule, the test-domain
oracle included, with the registry's summary: mean and std over data seeds of the test
error averaged over environments.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from irm_bench.selection import select

#: Rule of the published comparison (the authors' ``collect_results.py``).
PUBLISHED_RULE = "training_domain"

#: ``split`` of the run table -> ``role`` of the registry's sweep records.
ROLES = {"validation": "validation", "test": "test", "test_holdout": "test_holdout"}

TABLE_COLUMNS = [
    "protocol",
    "task",
    "method",
    "env",
    "mean",
    "std",
    "n_data_seeds",
    "selected_trial",
    "n_trials",
    "n_diverged",
    "hparams",
]


def sweep_records(runs: pd.DataFrame) -> pd.DataFrame:
    """The run table as registry sweep records (plus ``task``): setting = trial,
    restart = data seed, score = minus the error (NaN where the model diverged)."""
    rows = runs[runs["split"].isin(list(ROLES))]
    return pd.DataFrame(
        {
            "protocol": rows["protocol"].astype(str),
            "task": rows["task"],
            "method": rows["method"],
            "setting": rows["trial"].astype(int),
            "restart": rows["data_seed"].astype(int),
            "left_out": "",
            "step": 0,
            "environment": rows["env"],
            "role": rows["split"].map(ROLES),
            "score": -rows["error"].where(~rows["diverged"].astype(bool)),
        }
    )


def select_trials(runs: pd.DataFrame, rule: str = PUBLISHED_RULE) -> pd.DataFrame:
    """``(task, method) -> selected trial`` under ``rule`` (default: the authors')."""
    records = sweep_records(runs)
    out = []
    for task, part in records.groupby("task", sort=False):
        for row in select(part, rule).to_dict("records"):
            if row["setting"] is not None:
                out.append((task, row["method"], int(row["setting"])))
    return pd.DataFrame(out, columns=["task", "method", "selected_trial"])


#: Columns of ``unit_tests_selection.csv``.
SELECTION_COLUMNS = (
    "study", "protocol", "task", "rule", "method", "metric", "mean", "std", "n_restarts",
    "n_unselected", "setting", "selected_counts", "trained_on", "validated_on", "tested_on",
    "published_rule",
)  # fmt: skip

_VALIDATED = {
    "training_domain": "validation split (fresh draws, same distribution) of every "
    "training environment",
    "test_domain": "a held-out draw of the test split (spurious features shuffled) of every "
    "environment",
}


def selection_table(runs: pd.DataFrame, rules: Sequence[str]) -> pd.DataFrame:
    """``unit_tests_selection.csv``: method x rule per (protocol, task).

    One trial per method (the validation score averaged over data seeds, as the
    authors); ``mean`` / ``std`` (ddof 0) over data seeds of the test error averaged
    over environments. Trained on the train split of every environment (the oracle: its
    test distribution); tested on the test split of every environment.
    """
    records = sweep_records(runs)
    rows = []
    for (protocol, task), part in records.groupby(["protocol", "task"], sort=False):
        for rule in rules:
            for row in select(part, rule, skip_missing=True).to_dict("records"):
                rows.append(
                    {
                        "study": "unit_tests",
                        "protocol": protocol,
                        "task": task,
                        "rule": rule,
                        "method": row["method"],
                        "metric": "test_error",
                        "mean": -row["test_mean"],
                        "std": row["test_std"],
                        "n_restarts": row["n_restarts"],
                        "n_unselected": row["n_unselected"],
                        "setting": None if row["setting"] is None else f"trial {row['setting']}",
                        "selected_counts": row["selected_counts"],
                        "trained_on": "train split of every environment (oracle: the test "
                        "distribution)",
                        "validated_on": _VALIDATED[rule],
                        "tested_on": "test split of every environment, error averaged over "
                        "environments",
                        "published_rule": rule == PUBLISHED_RULE,
                    }
                )
    return pd.DataFrame(rows, columns=list(SELECTION_COLUMNS))


def results_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The tidy results table (columns :data:`TABLE_COLUMNS`), one row per (task,
    method, environment) plus ``env = avg``."""
    selected = select_trials(runs)
    rows = []
    for task, method, trial in selected.itertuples(index=False):
        job = runs[(runs["task"] == task) & (runs["method"] == method)]
        test = job[(job["split"] == "test") & (job["trial"] == trial)]
        hparams = test["hparams"].iloc[0]
        n_div = int(
            job[job["split"] == "test"].groupby(["trial", "data_seed"])["diverged"].any().sum()
        )
        stats = test.groupby("env")["error"].agg(mean="mean", std=lambda v: v.std(ddof=0))
        n_seeds = test["data_seed"].nunique()
        protocol = ",".join(sorted(set(job["protocol"].astype(str))))
        common = (n_seeds, int(trial), job["trial"].nunique(), n_div, hparams)
        for env, (mean, std) in stats.iterrows():
            rows.append((protocol, task, method, env, mean, std, *common))
        avg = (stats["mean"].mean(), stats["std"].mean())
        rows.append((protocol, task, method, "avg", *avg, *common))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)
