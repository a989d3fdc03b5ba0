"""Model selection and the results table of the unit-test study.

As the authors' ``collect_results.py``: per (task, method), the selected trial is the one
with the lowest sum over training environments of the validation error averaged over
data seeds (trials with a diverged model are skipped); its test error per environment is
reported as mean and standard deviation (ddof 0) over data seeds, and the average row
``env = avg`` is the mean over environments of those means and of those stds.
"""

from __future__ import annotations

import pandas as pd

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


def select_trials(runs: pd.DataFrame) -> pd.DataFrame:
    """``(task, method) -> selected trial`` with its summed validation error."""
    val = runs[runs["split"] == "validation"]
    bad = val.groupby(["task", "method", "trial"])["diverged"].any()
    per_env = val.groupby(["task", "method", "trial", "env"])["error"].mean()
    score = per_env.groupby(["task", "method", "trial"]).sum()
    score = score[~bad.reindex(score.index)]
    best = score.groupby(["task", "method"]).idxmin().map(lambda idx: idx[2])
    return best.rename("selected_trial").reset_index()


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
