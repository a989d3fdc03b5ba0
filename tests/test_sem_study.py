"""One SEM job end to end, and the aggregation into the study tables (golden values)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from irm_bench.methods.irm_linear import IRMv1Config
from irm_bench.sem.aggregate import error_table, lambda_sweep_table, selected_lambda_table
from irm_bench.sem.study import SEMStudyConfig, run_sem_job

SMALL = SEMStudyConfig(
    setups=("FOS",), n_draws=2, draws_per_job=2, n_per_env=100, methods=("erm", "icp", "irmv1"),
    irmv1=IRMv1Config(reg_grid=(0.0, 0.1), steps=30),
)  # fmt: skip


def test_job_is_deterministic_and_seed_dependent():
    a = run_sem_job(SMALL, "FOS", [0, 1])
    b = run_sem_job(SMALL, "FOS", [0, 1])
    c = run_sem_job(SEMStudyConfig(**{**SMALL.__dict__, "seed": 5}), "FOS", [0, 1])
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])
    assert not np.allclose(a[0]["causal_error"], c[0]["causal_error"])


def test_job_rows_and_coefficients_agree():
    rows, coefs, _ = run_sem_job(SMALL, "FOS", [0, 1])
    # 2 draws x (erm, icp, 2 IRMv1 grid points)
    assert len(rows) == 8 and len(coefs) == 80
    assert set(rows["protocol"]) == {"irm-paper-sem"}
    assert rows.groupby(["draw", "method"])["selected"].sum().eq(1).all()
    # The causal error recomputed from the long coefficient table.
    causal = coefs[coefs["true_coefficient"] != 0].copy()
    causal["sq"] = (causal["coefficient"] - causal["true_coefficient"]) ** 2
    recomputed = causal.groupby(["draw", "method", "reg"], dropna=False)["sq"].mean()
    merged = rows.set_index(["draw", "method", "reg"])["causal_error"]
    np.testing.assert_allclose(merged.sort_index().values, recomputed.sort_index().values)
    assert math.isinf(rows.loc[rows["reg"] == 0, "lambda"].iloc[0])


def _golden_draws() -> pd.DataFrame:
    base = {"protocol": "irm-paper-sem", "setup": "FOU", "val_mse": 1.0, "diverged_step": pd.NA}
    rows = []
    for draw, (erm_c, irm) in enumerate([(0.1, (0.5, 0.2)), (0.3, (0.4, np.nan))]):
        rows.append({**base, "draw": draw, "seed": draw, "method": "erm", "reg": np.nan,
                     "lambda": np.nan, "selected": True, "causal_error": erm_c,
                     "noncausal_error": 2 * erm_c, "diverged": False})  # fmt: skip
        for reg, err in zip((0.0, 0.1), irm, strict=True):
            div = bool(np.isnan(err))
            sel = (reg == 0.1) if draw == 0 else (reg == 0.0)
            rows.append({**base, "draw": draw, "seed": draw, "method": "irmv1", "reg": reg,
                         "lambda": math.inf if reg == 0 else 9.0, "selected": sel,
                         "causal_error": err, "noncausal_error": err, "diverged": div,
                         "diverged_step": 1000 if div else pd.NA})  # fmt: skip
    return pd.DataFrame(rows)


def test_error_table_golden_values():
    table = error_table(_golden_draws(), ["erm", "irmv1"]).set_index("method")
    assert table.loc["erm", "causal_error_mean"] == pytest.approx(0.2)
    assert table.loc["erm", "causal_error_std"] == pytest.approx(0.1)  # ddof=0
    assert table.loc["erm", "noncausal_error_mean"] == pytest.approx(0.4)
    # IRMv1 selected 0.2 (draw 0, lambda 9) and 0.4 (draw 1, lambda inf).
    assert table.loc["irmv1", "causal_error_mean"] == pytest.approx(0.3)
    assert table.loc["irmv1", "n_draws"] == 2 and table.loc["irmv1", "n_diverged"] == 0
    assert table.loc["irmv1", "selected_lambda_counts"] == "inf:1;9:1"
    assert table.loc["erm", "selected_lambda_counts"] == ""


def test_sweep_counts_diverged_fits_separately():
    sweep = lambda_sweep_table(_golden_draws()).set_index("reg")
    assert sweep.loc[0.1, "n_diverged"] == 1
    assert sweep.loc[0.1, "causal_error_mean"] == pytest.approx(0.2)  # NaN not averaged in
    assert sweep.loc[0.0, "causal_error_mean"] == pytest.approx(0.45)
    counts = selected_lambda_table(_golden_draws())
    assert counts["count"].tolist() == [1, 1]


def test_draw_without_any_usable_fit_counts_as_diverged():
    draws = _golden_draws()
    draws.loc[(draws["draw"] == 1) & (draws["method"] == "irmv1"), ["selected", "diverged"]] = [
        False,
        True,
    ]
    table = error_table(draws, ["erm", "irmv1"]).set_index("method")
    assert table.loc["irmv1", "n_diverged"] == 1
    assert table.loc["irmv1", "causal_error_mean"] == pytest.approx(0.2)


def test_results_do_not_depend_on_how_draws_are_split_into_jobs():
    together, _, _ = run_sem_job(SMALL, "FOS", [0, 1])
    alone, _, _ = run_sem_job(SMALL, "FOS", [1])
    second = together[together["draw"] == 1].reset_index(drop=True)
    closed_form = second["method"] != "irmv1"
    pd.testing.assert_frame_equal(second[closed_form], alone[closed_form])
    # IRMv1 agrees up to float32 rounding of a different batch width.
    np.testing.assert_allclose(
        second.loc[~closed_form, "causal_error"], alone.loc[~closed_form, "causal_error"],
        rtol=1e-4,
    )  # fmt: skip


def test_study_config_names_unknown_keys():
    with pytest.raises(ValueError, match=r"'sem\.irmv1\.stepz' \(did you mean 'steps'"):
        SEMStudyConfig.from_mapping({"irmv1": {"stepz": 3}})
    config = SEMStudyConfig.from_mapping({"enabled": True, "n_draws": 5, "draws_per_job": 2})
    assert [list(config.chunk_draws(c)) for c in range(config.n_chunks)] == [[0, 1], [2, 3], [4]]
