"""Unit-test study: bad config input, model selection by hand, determinism of a job."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import yaml

from irm_bench.config import ConfigError, validate_config
from irm_bench.unit_tests.aggregate import results_table, selection_table
from irm_bench.unit_tests.protocol import UnitTestsConfig, run_job, trial_hparams

REPO = Path(__file__).resolve().parents[1]

# (case id, unit_tests patch, offending key, phrase saying what was expected)
BAD = [
    ("unknown-task", {"tasks": ["Example4"]}, "unit_tests.tasks[0]", "known: Example1"),
    ("typo-task", {"tasks": ["Exmple1s"]}, "unit_tests.tasks[0]", "did you mean 'Example1s'"),
    ("unknown-method", {"methods": ["irm"]}, "unit_tests.methods[0]", "did you mean"),
    ("zero-dim-inv", {"dim_inv": 0}, "unit_tests.dim_inv", ">= 1"),
    ("negative-dim-spu", {"dim_spu": -3}, "unit_tests.dim_spu", ">= 1"),
    ("too-many-envs", {"n_envs": 5}, "unit_tests.n_envs", "defines 3 environments, found 5"),
    ("one-env", {"n_envs": 1}, "unit_tests.n_envs", ">= 2"),
    (
        "low-above-high",
        {"search": {"irmv1": {"irm_lambda": {"low": -0.3, "high": -3}}}},
        "unit_tests.search.irmv1.irm_lambda",
        "low <= high",
    ),
    (
        "unknown-hparam",
        {"search": {"iga": {"tau": {"low": 0, "high": 1}}}},
        "unit_tests.search.iga.tau",
        "known: lr, wd, penalty",
    ),
    ("unknown-preset", {"preset": "paper"}, "unit_tests.preset", "full, quick"),
    ("unknown-key", {"n_seeds": 3}, "unit_tests.n_seeds", "expected one of"),
    (
        "unknown-rule",
        {"selection": {"rules": ["training_domain", "test_domian"]}},
        "unit_tests.selection.rules[1]",
        "did you mean 'test_domain'",
    ),
    (
        "unrun-rule",
        {"selection": {"rules": ["leave_one_out"]}},
        "unit_tests.selection.rules[0]",
        "this study runs (training_domain, test_domain)",
    ),
]


@pytest.mark.parametrize(("case", "patch", "key", "phrase"), BAD, ids=[b[0] for b in BAD])
def test_bad_unit_tests_config_names_the_key(case, patch, key, phrase, tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config = copy.deepcopy(config)
    config["unit_tests"].update(patch)
    with pytest.raises(ConfigError) as err:
        validate_config(config, base_dir=tmp_path, check_paths=False)
    lines = [line for line in str(err.value).splitlines() if f"'{key}'" in line]
    assert lines, str(err.value)
    assert phrase in lines[0], lines[0]


def test_selection_and_table_by_hand():
    # Two trials, two data seeds, two environments. Validation sums over envs of the
    # seed-means: trial 0: (0.2+0.4)/2 + (0.1+0.1)/2 = 0.4; trial 1: 0.1 + 0.2 = 0.3.
    rows = []
    val = {0: [(0.2, 0.1), (0.4, 0.1)], 1: [(0.1, 0.2), (0.1, 0.2)]}
    test = {0: [(0.0, 0.0), (0.0, 0.0)], 1: [(0.3, 0.5), (0.1, 0.9)]}
    for split, values in (("validation", val), ("test", test)):
        for trial in (0, 1):
            for seed in (0, 1):
                for e in (0, 1):
                    err = values[trial][seed][e]
                    rows.append(("p", "T", "erm", trial, seed, split, f"E{e}", err, False, "{}"))
    runs = pd.DataFrame(
        rows,
        columns=[
            "protocol",
            "task",
            "method",
            "trial",
            "data_seed",
            "split",
            "env",
            "error",
            "diverged",
            "hparams",
        ],
    )
    table = results_table(runs).set_index("env")
    assert set(table["selected_trial"]) == {1}
    assert table.loc["E0", "mean"] == pytest.approx(0.2)
    assert table.loc["E0", "std"] == pytest.approx(0.1)  # ddof 0 of (0.3, 0.1)
    assert table.loc["E1", "mean"] == pytest.approx(0.7)
    assert table.loc["avg", "mean"] == pytest.approx(0.45)
    assert table.loc["avg", "std"] == pytest.approx(0.15)  # mean of 0.1 and 0.2 (E1: 0.5, 0.9)
    # The selection table: training_domain picks trial 1 too; test error averaged over
    # environments per seed: (0.3+0.5)/2 = 0.4, (0.1+0.9)/2 = 0.5 -> 0.45 +- 0.05.
    # Test-domain oracle on a held-out test draw: trial 0 .3, trial 1 .1 (best).
    holdout = runs[runs["split"] == "test"].assign(split="test_holdout")
    holdout["error"] = holdout["trial"].map({0: 0.3, 1: 0.1})
    both = pd.concat([runs, holdout], ignore_index=True)
    sel = selection_table(both, ["training_domain", "test_domain"]).set_index("rule")
    for rule in ("training_domain", "test_domain"):
        assert sel.loc[rule, "setting"] == "trial 1" and sel.loc[rule, "n_restarts"] == 2
        assert sel.loc[rule, "mean"] == pytest.approx(0.45)
        assert sel.loc[rule, "std"] == pytest.approx(0.05)
    assert sel.loc["training_domain", "published_rule"]
    assert not sel.loc["test_domain", "published_rule"]
    holdout["error"] = holdout["trial"].map({0: 0.1, 1: 0.3})  # now trial 0 wins: 0 +- 0
    sel = selection_table(pd.concat([runs, holdout]), ["test_domain"]).iloc[0]
    assert sel["setting"] == "trial 0" and sel["mean"] == 0 and sel["std"] == 0
    # A trial with a diverged model is never selected.
    runs.loc[(runs["trial"] == 1) & (runs["data_seed"] == 0), "diverged"] = True
    assert set(results_table(runs)["selected_trial"]) == {0}


def test_job_is_deterministic_and_trial_zero_is_the_defaults():
    section = {"n_samples": 40, "n_iterations": 5, "n_trials": 3, "n_data_seeds": 2}
    config = UnitTestsConfig.from_config(section)
    a = run_job(config, "Example2s", "irmv1")
    b = run_job(config, "Example2s", "irmv1")
    pd.testing.assert_frame_equal(a, b)
    # The oracle's held-out test draw is a fresh draw of the test split.
    test, held = (a[a["split"] == s].reset_index() for s in ("test", "test_holdout"))
    assert len(held) == len(test) and not held["error"].equals(test["error"])
    other = UnitTestsConfig.from_config({**section, "seed": 1})
    assert not run_job(other, "Example2s", "irmv1")["error"].equals(a["error"])
    # Chunking the data seeds changes nothing: models of different seeds never interact.
    chunked = run_job(
        UnitTestsConfig.from_config({**section, "seeds_per_chunk": 1}), "Example2s", "irmv1"
    )
    pd.testing.assert_frame_equal(chunked, a, check_exact=False, rtol=1e-5)
    trials = trial_hparams(config, "irmv1")
    assert trials[0] == {"lr": 1e-3, "wd": 0.0, "irm_lambda": 0.9}
    assert 1e-4 <= trials[1]["lr"] <= 1e-2 and 1 - 10**-0.3 <= trials[2]["irm_lambda"] <= 0.999
