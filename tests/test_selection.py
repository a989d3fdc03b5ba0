"""Model-selection rules on a hand-made sweep (irm_bench.selection).

Three settings (a, b, c) x two restarts; each rule's pick and its mean +- std (ddof 0)
are computed by hand in the comments.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from irm_bench.selection import (
    ProtocolMismatchError,
    check_one_protocol,
    get_rule,
    holdout_split,
    select,
)

LAST = 500


def _sweep() -> pd.DataFrame:
    rows = []

    def add(setting, restart, role, env, score, left_out="", step=LAST):
        rows.append(
            dict(protocol="p", method="irmv1", setting=setting, restart=restart,
                 left_out=left_out, step=step, environment=env, role=role, score=score)
        )  # fmt: skip

    # Training-domain validation (mean over env1, env2, then restarts):
    # a: .71, .70 -> .705; b: .80, .79 -> .795 (best); c: .60, .62 -> .61.
    for s, r, v1, v2 in [("a", 0, .70, .72), ("a", 1, .69, .71), ("b", 0, .80, .80),
                         ("b", 1, .78, .80), ("c", 0, .60, .60), ("c", 1, .62, .62)]:  # fmt: skip
        add(s, r, "validation", "env1", v1)
        add(s, r, "validation", "env2", v2)
        add(s, r, "validation", "env1", 0.99, step=0)  # an earlier step: never scored
    # Test environment: b -> (.50, .54): .52 +- .02; c -> (.66, .70): .68 +- .02.
    for s, r, t, h in [("a", 0, .30, .31), ("a", 1, .32, .33), ("b", 0, .50, .52),
                       ("b", 1, .54, .50), ("c", 0, .66, .67), ("c", 1, .70, .69)]:  # fmt: skip
        add(s, r, "test", "test", t)
        # Held-out part of the test environment: a .32, b .51, c .68 (best).
        add(s, r, "test_holdout", "test", h)
    # Leave-one-out runs, scored on the left-out environment:
    # a: (.65+.75)/2, (.66+.74)/2 -> .70 (best); b: .61, .59 -> .60; c: .50.
    for s, r, out1, out2, t1, t2 in [
        ("a", 0, .65, .75, .40, .44), ("a", 1, .66, .74, .36, .40),
        ("b", 0, .60, .62, .9, .9), ("b", 1, .58, .60, .9, .9),
        ("c", 0, .50, .50, .9, .9), ("c", 1, .50, .50, .9, .9),
    ]:  # fmt: skip
        add(s, r, "validation", "env1", out1, left_out="env1")
        add(s, r, "validation", "env2", 0.99, left_out="env1")  # trained on: ignored
        add(s, r, "validation", "env2", out2, left_out="env2")
        add(s, r, "test", "test", t1, left_out="env1")
        add(s, r, "test", "test", t2, left_out="env2")
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    "rule, setting, validation, mean, std",
    [
        ("training_domain", "b", 0.795, 0.52, 0.02),
        ("test_domain", "c", 0.68, 0.68, 0.02),
        # a's left-out runs report test .42 (restart 0) and .38 (restart 1).
        ("leave_one_out", "a", 0.70, 0.40, 0.02),
    ],
)
def test_each_rule_picks_the_hand_computed_setting(rule, setting, validation, mean, std):
    (row,) = select(_sweep(), rule).to_dict("records")
    assert row["setting"] == setting and row["rule"] == rule and row["n_restarts"] == 2
    assert row["validation_score"] == pytest.approx(validation)
    assert row["test_mean"] == pytest.approx(mean)
    assert row["test_std"] == pytest.approx(std)


def test_leave_one_out_needs_two_left_out_environments():
    sweep = _sweep()
    sweep = sweep[sweep["left_out"] != "env2"]
    with pytest.raises(ValueError, match=r"leave_one_out needs .* >= 2 training environments"):
        select(sweep, "leave_one_out")


def test_rows_of_two_protocols_are_never_averaged():
    sweep = _sweep()
    sweep.loc[sweep["restart"] == 1, "protocol"] = "irm-paper-cmnist"
    with pytest.raises(ProtocolMismatchError, match=r"'irm-paper-cmnist' and 'p'"):
        select(sweep, "training_domain")
    with pytest.raises(ProtocolMismatchError, match=r"'irm-paper-cmnist' and 'p'"):
        check_one_protocol(sweep)


def test_unknown_rule_lists_the_known_ones():
    with pytest.raises(KeyError, match=r"did you mean 'test_domain'.*training_domain"):
        get_rule("test_domian")


def test_holdout_split_is_disjoint_and_seeded():
    train, val = holdout_split(1000, 0.2, np.random.default_rng(7))
    assert len(val) == 200 and len(train) == 800
    assert not set(train) & set(val) and set(train) | set(val) == set(range(1000))
    again = holdout_split(1000, 0.2, np.random.default_rng(7))
    assert all(np.array_equal(x, y) for x, y in zip((train, val), again, strict=True))
    other = holdout_split(1000, 0.2, np.random.default_rng(8))
    assert not np.array_equal(val, other[1])
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"validation fraction must lie in \(0, 1\)"):
            holdout_split(10, bad, np.random.default_rng(0))


def _draws() -> pd.DataFrame:
    """Settings x, y, z over restarts 0..2 under the last-environment rule.

    Validation (last environment): r0 x .9, y .8, z NaN (diverged); r1 x .1, y .5,
    z .99; r2 NaN everywhere. Test: x (.6, .0, .7), y (.2, .4, .1), z (NaN, .0, .5).
    """
    val = {"x": (0.9, 0.1, np.nan), "y": (0.8, 0.5, np.nan), "z": (np.nan, 0.99, np.nan)}
    test = {"x": (0.6, 0.0, 0.7), "y": (0.2, 0.4, 0.1), "z": (np.nan, 0.0, 0.5)}
    rows = []
    for s in "xyz":
        for r in range(3):
            for role, score in (("last_environment", val[s][r]), ("test", test[s][r])):
                rows.append(
                    dict(protocol="p", method="m", setting=s, restart=r, left_out="",
                         step=LAST, environment="e3", role=role, score=score)
                )  # fmt: skip
    return pd.DataFrame(rows)


def test_a_setting_diverged_in_any_restart_is_never_chosen_on_the_mean():
    # Restarts 0, 1 only: x (.9+.1)/2 = .5, y .65 (best), z NaN; y's test .2, .4.
    draws = _draws()
    (row,) = select(draws[draws["restart"] < 2], "last_environment").to_dict("records")
    assert row["setting"] == "y" and row["validation_score"] == pytest.approx(0.65)
    assert row["test_mean"] == pytest.approx(0.3) and row["test_std"] == pytest.approx(0.1)
    # With restart 2 (all NaN) no setting is usable.
    (row,) = select(draws, "last_environment").to_dict("records")
    assert row["setting"] is None and row["n_restarts"] == 0 and row["n_unselected"] == 3


def test_per_restart_selection_chooses_in_each_restart():
    # r0 picks x (test .6), r1 picks z (.99; test .0), r2 nothing: .3 +- .3 over two.
    (row,) = select(_draws(), "last_environment", per_restart=True).to_dict("records")
    assert row["selected_counts"] == "x:1;z:1" and row["setting"] == "x"
    assert row["n_restarts"] == 2 and row["n_unselected"] == 1
    assert row["validation_score"] == pytest.approx((0.9 + 0.99) / 2)
    assert row["test_mean"] == pytest.approx(0.3) and row["test_std"] == pytest.approx(0.3)


def test_rule_problems_name_the_key_before_training():
    from irm_bench.selection import rule_problems

    (line,) = rule_problems(["leave_one_out"], "x.selection.rules", 1, ("leave_one_out",))
    assert line == (
        "config key 'x.selection.rules[0]': expected >= 2 training environments for "
        "leave_one_out, found 1"
    )
    assert rule_problems(["leave_one_out"], "k", 2, ("leave_one_out",)) == []
    (line,) = rule_problems(["test_domain", "lastenv"], "k", 3, ("test_domain",))
    assert line.startswith("config key 'k[1]': expected a selection rule, found 'lastenv'")
    (line,) = rule_problems(["training_domain"], "k", 3, ("test_domain",), {})
    assert "expected one of the rules this study runs (test_domain)" in line
