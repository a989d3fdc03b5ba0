"""The SEM study's two protocols and its selection table (irm_bench.sem, .selection).

Known answers: the hold-out rows are disjoint from the fitted rows and fixed by the
draw's seed; ERM's recorded hold-out MSE equals a least-squares fit on the fitted rows
alone, scored on the held-out ones (numpy, no moments); the registry's
``last_environment`` rule on the reference protocol gives exactly Figure 4's table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from irm_bench.methods.irm_linear import IRMv1Config
from irm_bench.selection import ProtocolMismatchError, select
from irm_bench.sem.aggregate import error_table, selection_table, sweep_records
from irm_bench.sem.study import (
    PROTOCOL,
    SEMSelection,
    SEMStudyConfig,
    draw_environments,
    holdout_environments,
    run_holdout_job,
    run_sem_job,
)

SMALL = SEMStudyConfig(
    setups=("FOS",), n_draws=3, draws_per_job=3, n_per_env=100, methods=("erm", "icp", "irmv1"),
    irmv1=IRMv1Config(reg_grid=(0.0, 0.01, 0.1), steps=40),
    selection=SEMSelection(validation_fraction=0.2, holdout_draws=2),
)  # fmt: skip
RULES = ("last_environment", "training_domain", "test_domain")


@pytest.fixture(scope="module")
def job():
    rows, _, _ = run_sem_job(SMALL, "FOS", [0, 1, 2])
    holdout, _ = run_holdout_job(SMALL, "FOS", [0, 1, 2])
    return rows, holdout


def test_holdout_rows_are_disjoint_and_fixed_by_the_draw_seed():
    _, envs, seed = draw_environments("FOS", 0, SMALL)
    fit, held = holdout_environments(envs, seed, 0.2)
    _, held_again = holdout_environments(envs, seed, 0.2)
    _, other = holdout_environments(envs, seed + 1, 0.2)
    for (x, _), (xf, yf), (xh, yh) in zip(envs, fit, held, strict=True):
        assert len(yh) == 20 and len(yf) == 80
        rows = {tuple(r) for r in x}
        fitted, out = {tuple(r) for r in xf}, {tuple(r) for r in xh}
        assert not fitted & out and fitted | out == rows
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(held, held_again, strict=True))
    assert not np.array_equal(held[0][0], other[0][0])


def test_erm_holdout_mse_is_a_fit_that_never_saw_the_held_out_rows(job):
    _, holdout = job
    assert set(holdout["protocol"]) == {"sem-holdout-0.2"}
    assert sorted(holdout["draw"].unique()) == [0, 1]  # holdout_draws = 2
    _, envs, seed = draw_environments("FOS", 1, SMALL)
    fit, held = holdout_environments(envs, seed, 0.2)
    x = np.concatenate([f[0] for f in fit])  # ERM pools every environment's fit rows
    y = np.concatenate([f[1] for f in fit])
    beta = np.linalg.lstsq(x, y, rcond=None)[0]
    mine = holdout[(holdout["method"] == "erm") & (holdout["draw"] == 1)]
    for env, (xh, yh) in enumerate(held):
        role = "test_holdout" if env == 2 else "validation"
        rec = mine[(mine["role"] == role) & (mine["environment"] == str(env))]["error"]
        assert float(rec.iloc[0]) == pytest.approx(np.mean((xh @ beta - yh) ** 2), rel=1e-9)


def test_last_environment_rule_reproduces_figure_4(job):
    rows, holdout = job
    records = sweep_records(rows, holdout)
    table = selection_table(records, RULES, ["erm", "icp", "irmv1"])
    ref = table[table["protocol"] == PROTOCOL]
    assert set(ref["rule"]) == {"last_environment"} and ref["published_rule"].all()
    errors = error_table(rows).set_index("method")
    for metric in ("causal_error", "noncausal_error"):
        mine = ref[ref["metric"] == metric].set_index("method")
        np.testing.assert_allclose(mine["mean"], errors.loc[mine.index, f"{metric}_mean"])
        np.testing.assert_allclose(mine["std"], errors.loc[mine.index, f"{metric}_std"])
        assert (mine["n_restarts"] == 3).all()
    held = table[table["protocol"] == "sem-holdout-0.2"]
    assert set(held["rule"]) == set(RULES) and not held["published_rule"].any()
    assert (held["n_restarts"] == 2).all()
    # The reference protocol's row is never averaged with the hold-out protocol's.
    with pytest.raises(ProtocolMismatchError, match=r"'irm-paper-sem' and 'sem-holdout-0\.2'"):
        select(records, "last_environment")


def test_protocol_of_each_row_is_described(job):
    table = selection_table(sweep_records(*job), RULES)
    assert table[["trained_on", "validated_on", "tested_on"]].notna().all().all()
    row = table[(table["rule"] == "training_domain")].iloc[0]
    assert "0.2 hold-out of environments 1..E-1" in row["validated_on"]
    assert isinstance(table, pd.DataFrame) and set(table["study"]) == {"sem"}
