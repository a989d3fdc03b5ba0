"""The tolerance rule on hand-made cases: inside, outside and exactly on the boundary."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from irm_bench import scorecard as sc

FIXTURES = Path(__file__).parent / "fixtures" / "run"


def published(
    study: str, setup: str, method: str, metric: str, protocol: str | None = None
) -> sc.Published:
    """The published number; Colored MNIST defaults to the IRM paper's Table 1."""
    if protocol is None:
        protocol = sc.SEM_PROTOCOL if study == "sem" else sc.CMNIST_PROTOCOL
    (p,) = [
        p
        for p in sc.PUBLISHED
        if (p.study, p.protocol, p.setup, p.method, p.metric)
        == (study, protocol, setup, method, metric)
    ]
    return p


def test_every_published_number_is_there_once() -> None:
    keys = [(p.study, p.protocol, p.setup, p.method, p.metric) for p in sc.PUBLISHED]
    # SEM: 8 setups x 3 methods x 2 errors; IRM Table 1: 3 methods x 2; Fishr Table 2:
    # 4 methods x (train, test, gray test).
    assert len(keys) == len(set(keys)) == 8 * 3 * 2 + 3 * 2 + 4 * 3
    # Spot checks against the table, the paper's Table 1 and Fishr's Table 2.
    assert published("sem", "FES", "icp", "noncausal_error").value == 0.103
    assert published("sem", "POS", "irmv1", "causal_error").value == 0.0190
    p = published("cmnist", "", "irmv1", "test_acc")
    assert (p.value, p.spread) == (66.9, 2.5)
    t2 = sc.CMNIST_TABLE2_PROTOCOL
    fishr = [published("cmnist", "", "fishr", m, t2) for m in ("train_acc", "test_acc")]
    assert [(p.value, p.spread) for p in fishr] == [(71.0, 0.9), (69.5, 1.0)]
    assert published("cmnist", "", "erm", "gray_test_acc", t2).value == 71.0
    assert published("cmnist", "", "vrex", "gray_test_acc", t2).spread == 2.2
    assert not [p for p in sc.PUBLISHED if p.method == "groupdro"]  # none published


@pytest.mark.parametrize(
    ("mean", "expected"),
    [(70.2, "yes"), (66.0, "yes"), (74.4, "yes"), (74.41, "no"), (65.99, "no")],
)
def test_table2_gray_test_uses_the_same_rule_and_its_own_protocol(mean, expected) -> None:
    t2 = sc.CMNIST_TABLE2_PROTOCOL
    p = published("cmnist", "", "fishr", "gray_test_acc", t2)  # 70.2 ± 1.1: tolerance 4.2
    s = sc.score(p, sc.Ours(t2, mean=mean, std=1.0, n=3))
    assert s.tolerance == pytest.approx(4.2)
    assert s.status == expected
    # a Table 1 row (IRM paper protocol) is never compared with a Table 2 number
    other = sc.score(p, sc.Ours(sc.CMNIST_PROTOCOL, mean=70.2, std=1.0, n=3))
    assert other.status == "not compared"


@pytest.mark.parametrize(
    ("mean", "expected"),
    [
        (0.821, "yes"),  # equal
        (0.821 + 0.20525, "yes"),  # exactly 25 % above: on the boundary, inclusive
        (0.821 - 0.20525, "yes"),  # exactly 25 % below
        (0.821 + 0.2053, "no"),  # just outside
        (0.5, "no"),
    ],
)
def test_sem_relative_branch(mean: float, expected: str) -> None:
    p = published("sem", "FEU", "erm", "causal_error")  # 0.821; 25 % is 0.20525
    ours = sc.Ours(sc.SEM_PROTOCOL, mean=mean, std=0.0, n=200)
    assert sc.score(p, ours).status == expected


@pytest.mark.parametrize(
    ("mean", "expected"),
    [(0.0029 + 0.003, "yes"), (0.0029 - 0.003, "yes"), (0.0029 + 0.00301, "no")],
)
def test_sem_standard_error_branch(mean: float, expected: str) -> None:
    # std 0.002 over 4 draws: SE 0.001, 3 SE = 0.003 > 25 % of 0.0029.
    p = published("sem", "FOU", "irmv1", "causal_error")
    ours = sc.Ours(sc.SEM_PROTOCOL, mean=mean, std=0.002, n=4)
    s = sc.score(p, ours)
    assert s.tolerance == pytest.approx(0.003)
    assert s.status == expected


def test_diverged_draws_do_not_shrink_the_standard_error() -> None:
    p = published("sem", "FOU", "irmv1", "causal_error")
    ours = sc.Ours(sc.SEM_PROTOCOL, mean=0.0029, std=0.002, n=4, n_diverged=96)
    assert sc.tolerance(p, ours) == pytest.approx(0.003)


@pytest.mark.parametrize(
    ("mean", "expected"),
    [(66.9, "yes"), (59.9, "yes"), (73.9, "yes"), (59.89, "no"), (74.0, "no")],
)
def test_cmnist_published_std_plus_two_points(mean: float, expected: str) -> None:
    p = published("cmnist", "", "irmv1", "test_acc")  # 66.9 ± 2.5: tolerance 7.0
    ours = sc.Ours(sc.CMNIST_PROTOCOL, mean=mean, std=5.0, n=10)
    s = sc.score(p, ours)
    assert s.tolerance == pytest.approx(7.0)
    assert s.status == expected


@pytest.mark.parametrize(
    ("setup", "metric", "mean", "std", "expected"),
    [
        ("PEU", "causal_error", 0.6, 0.0, "yes"),  # 1.000 published: same band (near 1)
        ("PEU", "causal_error", 0.45, 0.0, "no"),  # intermediate band, outside 25 %
        ("PEU", "causal_error", 0.45, 0.4, "yes"),  # within 3 SE: 3·0.4/√4 = 0.6 ≥ 0.55
        ("POU", "noncausal_error", 0.04, 0.0, "yes"),  # 0 published: both near 0
        ("POU", "noncausal_error", 0.06, 0.0, "no"),  # intermediate vs near 0
        ("FES", "noncausal_error", 0.3, 0.0, "yes"),  # 0.103: both intermediate
        ("FES", "noncausal_error", 0.0, 0.0, "no"),  # near 0 vs intermediate, 0.103 > 25 %
    ],
)
def test_icp_pattern(setup: str, metric: str, mean: float, std: float, expected: str) -> None:
    p = published("sem", setup, "icp", metric)
    ours = sc.Ours(sc.SEM_PROTOCOL, mean=mean, std=std, n=4)
    if expected == "yes" and std > 0:
        # The case above is meant to pass through the numeric branch only.
        assert sc.icp_band(mean) != sc.icp_band(p.value)
        assert abs(mean - p.value) <= sc.tolerance(p, ours)
    assert sc.score(p, ours).status == expected


def test_icp_band_edges() -> None:
    assert [sc.icp_band(v) for v in (0.0, 0.0499, 0.05, 0.4999, 0.5, 3.0)] == [0, 0, 1, 1, 2, 2]


def test_other_protocols_and_all_diverged_are_not_compared() -> None:
    p = published("sem", "FOU", "erm", "causal_error")
    other = sc.Ours("irm-bench-smoke", mean=p.value, std=0.0, n=4)
    s = sc.score(p, other)
    assert s.status == "not compared" and "protocol" in s.note
    none_left = sc.Ours(sc.SEM_PROTOCOL, mean=math.nan, std=math.nan, n=0, n_diverged=4)
    assert sc.score(p, none_left).status == "not compared"
    assert sc.score(p, None).status == "not run"


def test_rule_needs_a_spread_for_cmnist() -> None:
    p = replace(published("cmnist", "", "erm", "test_acc"), spread=None)
    with pytest.raises(ValueError, match="spread"):
        sc.tolerance(p, sc.Ours(sc.CMNIST_PROTOCOL, 17.1, 0.5, 3))


def test_build_scorecard_on_the_fixture_tables() -> None:
    sem = pd.read_csv(FIXTURES / "tables/sem_errors.csv")
    cm = pd.read_csv(FIXTURES / "tables/cmnist_accuracy.csv")
    scores = sc.build_scorecard(sem, cm)
    assert len(scores) == len(sc.PUBLISHED)
    status = {
        (s.published.setup, s.published.method, s.published.metric): s.status for s in scores
    }
    # Hand-checked: PES ICP causal 0.41 vs 1.000 (intermediate band, 0.59 > 0.45);
    # PES IRMv1 causal 0.405 vs 0.220 (0.185 > max(0.055, 3·0.061/√3 = 0.106));
    # oracle test 70.0 vs 73.0 ± 0.4 (3.0 > 2.8).
    status = {
        (s.published.protocol, s.published.setup, s.published.method, s.published.metric): (
            s.status
        )
        for s in scores
    }
    # ... and V-REx's gray test 62.0 vs 68.6 ± 2.2 (6.6 > 6.4) in Fishr's Table 2.
    assert {k[1:] for k, v in status.items() if v == "no"} == {
        ("PES", "icp", "causal_error"),
        ("PES", "irmv1", "causal_error"),
        ("", "grayscale", "test_acc"),
        ("", "vrex", "gray_test_acc"),
    }
    assert sc.headline(scores) == {
        "reproduced": 15 + 11,
        "compared": 18 + 12,
        "not_compared": 0,
        "not_run": 36,
        "total": 54 + 12,
    }
    # A CMNIST accuracy is compared in %, from the table's fractions, against the row
    # of its own protocol (ERM is in both tables).
    erm_test = {
        s.published.protocol: s.ours.mean
        for s in scores
        if s.published.method == "erm" and s.published.metric == "test_acc"
    }
    assert erm_test == pytest.approx({sc.CMNIST_PROTOCOL: 17.02, sc.CMNIST_TABLE2_PROTOCOL: 14.11})
    # A table from before the gray test has nothing to compare for it.
    old = cm.drop(columns=["gray_test_acc_mean", "gray_test_acc_std"])
    gray = [s for s in sc.build_scorecard(None, old) if s.published.metric == "gray_test_acc"]
    assert gray and {s.status for s in gray} == {"not run"}
    # A study left out of the run gives no rows at all.
    assert all(s.published.study == "sem" for s in sc.build_scorecard(sem, None))
