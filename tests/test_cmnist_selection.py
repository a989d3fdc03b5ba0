"""Colored MNIST model selection (irm_bench.cmnist.selection, envs.cmnist's selection split).

(a) the selection environments from real MNIST: sizes, disjointness, seeding and the
colour / label rule within binomial tolerance; (b) a hand-made curves table whose
selected settings and mean ± std are computed by hand; (c) a smoke-sized training run
with selection on and off gives the same Table 1 numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from irm_bench.cmnist.selection import (
    config_problems,
    selection_protocol,
    selection_table,
    sweep_records,
)
from irm_bench.envs.cmnist import (
    COLOUR_FLIP,
    LABEL_NOISE,
    data_seed,
    make_environments,
    make_selection_environments,
    selection_split,
    validation_size,
)
from irm_bench.mnist import fetch_mnist, load_mnist_test, load_mnist_train

# --- (a) the selection environments ------------------------------------------------


@pytest.fixture(scope="module")
def mnist_cache(mnist_source, tmp_path_factory):
    cache = tmp_path_factory.mktemp("mnist")
    fetch_mnist(cache, local_source=mnist_source)
    return cache


@pytest.fixture(scope="module")
def t10k(mnist_cache):
    return load_mnist_test(mnist_cache)


@pytest.fixture(scope="module")
def envs(mnist_cache):
    return make_environments(load_mnist_train(mnist_cache), data_seed(0, 0))


def test_split_sizes_disjoint_and_seeded():
    split = selection_split(data_seed(0, 0), 5000, 0.2)
    assert {k: len(v) for k, v in split.items()} == {
        "env1_val": 5000, "env2_val": 5000, "test_holdout": 2000, "test_rest": 8000,
    }  # fmt: skip
    # 0.2 x 25,000 x 2 is exactly the 10,000 t10k digits; the test parts partition 10,000
    both = torch.cat([split["env1_val"], split["env2_val"]])
    assert torch.equal(both.sort().values, torch.arange(10_000))
    rows = torch.cat([split["test_holdout"], split["test_rest"]])
    assert torch.equal(rows.sort().values, torch.arange(10_000))
    again = selection_split(data_seed(0, 0), 5000, 0.2)
    other = selection_split(data_seed(0, 1), 5000, 0.2)
    for name, index in split.items():
        assert torch.equal(index, again[name])
        assert not torch.equal(index, other[name])
    small = selection_split(data_seed(0, 0), 200, 0.2)
    assert len(small["env1_val"]) == len(small["env2_val"]) == 200
    assert not set(small["env1_val"].tolist()) & set(small["env2_val"].tolist())


def test_validation_size_scales_and_refuses_too_many_digits():
    assert validation_size(25_000, 0.2) == 5000
    assert validation_size(1000, 0.2) == 200
    with pytest.raises(ValueError, match=r"cmnist\.selection\.validation_fraction.*10000 t10k"):
        validation_size(25_000, 0.21)
    with pytest.raises(ValueError, match=r"cmnist\.selection\.validation_fraction.*\(0, 1\)"):
        validation_size(25_000, 1.0)


@pytest.mark.parametrize("name", ["env1", "env2"])
def test_validation_envs_follow_their_training_environment_rule(t10k, envs, name):
    held = make_selection_environments(t10k, envs, data_seed(0, 0), 0.2)
    env = held[f"{name}_val"]
    index = selection_split(data_seed(0, 0), 5000, 0.2)[f"{name}_val"]
    np.testing.assert_array_equal(env.digits.numpy(), t10k.digits[index.numpy()])
    np.testing.assert_array_equal(env.gray.numpy(), t10k.images[index.numpy(), ::2, ::2])
    n = len(env)
    assert n == 5000
    for p, observed in (
        (COLOUR_FLIP[name], (env.colours.float() != env.labels).float().mean().item()),
        (LABEL_NOISE, (env.labels != (env.digits < 5).float()).float().mean().item()),
    ):
        assert abs(observed - p) < 4 * math.sqrt(p * (1 - p) / n), (p, observed)


def test_test_parts_are_the_test_environment_rows(t10k, envs):
    held = make_selection_environments(t10k, envs, data_seed(0, 0), 0.2)
    index = selection_split(data_seed(0, 0), 5000, 0.2)
    for part in ("test_holdout", "test_rest"):
        for field in ("gray", "digits", "labels", "colours"):
            expected = getattr(envs["test"], field)[index[part]]
            assert torch.equal(getattr(held[part], field), expected)


# --- (b) a hand-made curves table ---------------------------------------------------

LAMS = (0.0, 1000.0, 91257.18613115903)
# per restart and λ at the last step (10): env1_val, env2_val, test_holdout, test_rest
LAST = {
    (0, 0.0): (0.80, 0.90, 0.10, 0.11),
    (0, 1000.0): (0.70, 0.70, 0.40, 0.41),
    (0, LAMS[2]): (0.60, 0.70, 0.65, 0.66),
    (1, 0.0): (0.60, 0.70, 0.12, 0.13),
    (1, 1000.0): (0.75, 0.85, 0.50, 0.52),
    (1, LAMS[2]): (0.70, 0.70, 0.60, 0.62),
}
ENVS = ("env1_val", "env2_val", "test_holdout", "test_rest")


def _curve_rows(method, study, lam, index, restart, step, values, protocol):
    return [
        (protocol, method, study, lam, index, restart, step, 0, env, "accuracy", v)
        for env, v in zip(ENVS, values, strict=True)
    ]


@pytest.fixture
def hand_made():
    rows, runs = [], []
    cm = "irm-paper-cmnist"
    for (restart, lam), values in LAST.items():
        index = LAMS.index(lam)
        rows += _curve_rows("irmv1", "sweep", lam, index, restart, 10, values, cm)
        # step 0: a decoy every rule must ignore (it scores only the last step)
        rows += _curve_rows("irmv1", "sweep", lam, index, restart, 0, (0.99,) * 4, cm)
        runs.append(("irmv1", "sweep", lam, restart, 11, False))
    # IRMv1's Table 1 run: ignored, the sweep is its settings
    rows += _curve_rows("irmv1", "table1", LAMS[2], 2, 0, 10, (0.99,) * 4, cm)
    runs.append(("irmv1", "table1", LAMS[2], 0, 11, False))
    # ERM: one setting; restart 2 diverged after step 0 (its curves stop there)
    for restart, values in ((0, (0.9, 0.9, 0.2, 0.20)), (1, (0.8, 0.8, 0.3, 0.30))):
        rows += _curve_rows("erm", "table1", 0.0, pd.NA, restart, 10, values, cm)
        runs.append(("erm", "table1", 0.0, restart, 11, False))
    rows += _curve_rows("erm", "table1", 0.0, pd.NA, 2, 0, (0.99,) * 4, cm)
    runs.append(("erm", "table1", 0.0, 2, 11, True))
    # other envs of the curves are not selection environments
    rows.append((cm, "erm", "table1", 0.0, pd.NA, 0, 10, 0, "test", "accuracy", 0.5))
    curves = pd.DataFrame(
        rows,
        columns=["protocol", "method", "study", "lambda", "lambda_index", "restart", "step",
                 "anneal_steps", "environment", "metric", "value"],
    )  # fmt: skip
    runs = pd.DataFrame(
        runs, columns=["method", "study", "lambda", "restart", "steps", "diverged"]
    ).assign(protocol=cm)
    return sweep_records(curves, runs, 0.2)


def test_records_roles_and_protocol(hand_made):
    assert set(hand_made["protocol"]) == {selection_protocol(0.2)} == {"cmnist-select-0.2"}
    roles = hand_made.drop_duplicates("environment").set_index("environment")["role"]
    assert roles.to_dict() == {
        "env1_val": "validation", "env2_val": "validation", "test_holdout": "test_holdout",
        "test_rest": "test",
    }  # fmt: skip
    irm = hand_made[hand_made["method"] == "irmv1"]
    assert sorted(set(irm["setting"])) == ["0", "1000", "91257.2"]
    assert set(hand_made[hand_made["method"] == "erm"]["setting"]) == {"-"}
    dead = hand_made[(hand_made["method"] == "erm") & (hand_made["restart"] == 2)]
    assert set(dead["step"]) == {10} and dead["score"].isna().all()


def test_each_rule_picks_the_hand_computed_setting(hand_made):
    table = selection_table(hand_made, ["training_domain", "test_domain"], 0.2, 25_000)
    got = table.set_index(["rule", "method"])
    # training domain: restart 0 picks λ = 0 (mean .85), restart 1 λ = 1000 (.80)
    irm = got.loc[("training_domain", "irmv1")]
    assert irm["selected_counts"] == "0:1;1000:1" and irm["n_restarts"] == 2
    assert irm["mean"] == pytest.approx((0.11 + 0.52) / 2)
    assert irm["std"] == pytest.approx(np.std([0.11, 0.52]))
    # the oracle: both restarts pick the paper's λ (test_holdout .65, .60)
    irm = got.loc[("test_domain", "irmv1")]
    assert irm["selected_counts"] == "91257.2:2" and irm["setting"] == "91257.2"
    assert irm["mean"] == pytest.approx(0.64) and irm["std"] == pytest.approx(0.02)
    # ERM: its one setting under both rules; the diverged restart is unselected
    for rule in ("training_domain", "test_domain"):
        erm = got.loc[(rule, "erm")]
        assert erm["setting"] == "-" and erm["n_restarts"] == 2 and erm["n_unselected"] == 1
        assert erm["mean"] == pytest.approx(0.25) and erm["std"] == pytest.approx(0.05)
    assert list(table["method"][:2]) == ["erm", "irmv1"]  # registry order
    assert set(table["study"]) == {"cmnist"} and not table["published_rule"].any()


def test_one_protocol_only(hand_made):
    from irm_bench.selection import ProtocolMismatchError

    mixed = pd.concat([hand_made, hand_made.assign(protocol="cmnist-select-0.1")])
    with pytest.raises(ProtocolMismatchError):
        selection_table(mixed, ["training_domain"], 0.2, 25_000)


def test_config_problems_name_the_key():
    base = {"preset": "default", "max_train_per_env": None}
    ok = {**base, "selection": {"enabled": True, "validation_fraction": 0.2,
                                "rules": ["training_domain", "test_domain"]}}  # fmt: skip
    assert config_problems(ok) == []
    loo = {**base, "selection": {"rules": ["leave_one_out"]}}
    (line,) = config_problems(loo)
    assert "cmnist.selection.rules[0]" in line and "two training environments" in line
    typo = {**base, "selection": {"rules": ["test_domian"]}}
    assert "did you mean 'test_domain'?" in config_problems(typo)[0]
    big = {**base, "selection": {"validation_fraction": 0.3}}
    assert "cmnist.selection.validation_fraction" in config_problems(big)[0]
    small = {**big, "max_train_per_env": 1000}
    assert config_problems(small) == []  # 300 each fits
    off = {**big, "selection": {"enabled": False, "validation_fraction": 0.3}}
    assert config_problems(off) == []


# --- (c) Table 1 does not depend on selection ---------------------------------------


@pytest.mark.parametrize("method", ["erm", "irmv1"])
def test_selection_on_or_off_gives_the_same_table1_numbers(mnist_cache, tmp_path, method):
    from irm_bench.cmnist.pipeline import train_job
    from irm_bench.cmnist.presets import build_plan

    plan = build_plan(
        {"preset": "smoke", "methods": [method], "restarts": 1, "sweep_restarts": 1,
         "max_train_per_env": 200, "seed": 0}
    )  # fmt: skip
    out = {}
    for fraction in (None, 0.2):
        tag = "off" if fraction is None else "on"
        runs = train_job(
            plan.jobs[method],
            plan,
            cache_dir=mnist_cache,
            device="cpu",
            log_every=5,
            restarts_per_chunk=None,
            threads=1,
            runs_path=tmp_path / f"runs_{tag}.csv",
            curves_path=tmp_path / f"curves_{tag}.csv",
            validation_fraction=fraction,
        )
        out[tag] = (runs, pd.read_csv(tmp_path / f"curves_{tag}.csv"))
    timing = ["seconds_per_step"]
    pd.testing.assert_frame_equal(out["off"][0].drop(columns=timing),
                                  out["on"][0].drop(columns=timing))  # fmt: skip
    on_curves = out["on"][1]
    assert set(ENVS) <= set(on_curves["environment"])
    assert not {f"gray_{e}" for e in ENVS} & set(on_curves["environment"])
    plain = on_curves[~on_curves["environment"].isin(ENVS)].reset_index(drop=True)
    pd.testing.assert_frame_equal(out["off"][1], plain)
    # and the selection records build from them (0.2 of 200 images: 40 per validation set)
    records = sweep_records(on_curves, out["on"][0], 0.2)
    assert set(records["role"]) == {"validation", "test_holdout", "test"}
