"""Published numbers of the IRM paper and the one rule that decides "reproduced".

Two studies are scored:

* The linear SEM study (Section 5.1, Figure 4). The paper prints Figure 4 only as a
  bar chart; the numbers below are the means of the committed results of the public
  reference code (facebookresearch/InvariantRiskMinimization, ``code/experiment_synthetic``,
  200 SEM draws per setup), as listed in irm-bench issue 2. They come without a spread.
* Colored MNIST (Section 5.2, Table 1): train / test accuracy in %, mean ± std over
  10 restarts, as printed in the paper.
* Colored MNIST, the Fishr paper's Table 2 "IRM setup" (Ramé, Dancette, Cord 2022,
  arXiv:2109.02934, Section 6.A): train / test / gray-test accuracy in %, mean ± std
  over 10 restarts, for ERM, IRMv1, V-REx and Fishr, all with IRMv1's
  hyper-parameters. No published GroupDRO number exists in this table.

The tolerance rule (:func:`tolerance`, :func:`score`) lives here and nowhere else; the
report prints :data:`TOLERANCE_RULE_TEXT`, which describes exactly this code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import pandas as pd

SEM_PROTOCOL = "irm-paper-sem"
CMNIST_PROTOCOL = "irm-paper-cmnist"
CMNIST_TABLE2_PROTOCOL = "fishr-table2-cmnist"

#: Relative slack for comparisons on the tolerance boundary: ``|d| == tol`` counts as
#: inside even when float rounding makes ``|d|`` a few ulps larger.
BOUNDARY_RTOL = 1e-9

# ICP "pattern" bands of a mean squared coefficient error: near 0 (ICP kept the right
# coordinates), intermediate, and near 1 or above (ICP returned the empty set, or
# coefficients as far off as zeros are).
ICP_BAND_EDGES = (0.05, 0.5)
ICP_BAND_NAMES = ("near 0", "intermediate", "near 1")

Rule = Literal["relative_or_se", "icp_pattern", "published_std_plus_points"]


@dataclass(frozen=True)
class Published:
    """One published number.

    Attributes
    ----------
    study : ``"sem"`` or ``"cmnist"``.
    protocol : protocol tag our rows must carry to be compared with this number.
    setup : SEM setup code (FOU..PES); ``""`` for Colored MNIST.
    method : ``erm``, ``icp``, ``irmv1`` (SEM) or ``erm``, ``irmv1``, ``grayscale``,
        ``vrex``, ``fishr`` (Colored MNIST).
    metric : ``causal_error``, ``noncausal_error`` (SEM, mean squared coefficient error)
        or ``train_acc``, ``test_acc``, ``gray_test_acc`` (Colored MNIST, in %).
    value : published mean.
    spread : published standard deviation over restarts, or ``None`` when none is given.
    rule : which branch of the tolerance rule applies.
    source : where the number comes from.
    """

    study: str
    protocol: str
    setup: str
    method: str
    metric: str
    value: float
    spread: float | None
    rule: Rule
    source: str


_SEM_SOURCE = "reference code, committed results (200 draws), via irm-bench issue 2"
_CMNIST_SOURCE = "paper Table 1 (10 restarts)"

# setup -> method -> (causal, non-causal) mean error.
_SEM_REFERENCE: dict[str, dict[str, tuple[float, float]]] = {
    "FOU": {"erm": (0.0091, 0.0090), "icp": (0.020, 0.00001), "irmv1": (0.0029, 0.0024)},
    "FOS": {"erm": (0.0092, 0.0090), "icp": (0.846, 0.0011), "irmv1": (0.0041, 0.0035)},
    "FEU": {"erm": (0.821, 0.821), "icp": (1.000, 0.804), "irmv1": (0.256, 0.333)},
    "FES": {"erm": (0.823, 0.822), "icp": (0.986, 0.103), "irmv1": (0.257, 0.333)},
    "POU": {"erm": (0.0189, 0.0179), "icp": (0.970, 0.0), "irmv1": (0.0152, 0.0142)},
    "POS": {"erm": (0.0203, 0.0182), "icp": (1.000, 0.0), "irmv1": (0.0190, 0.0159)},
    "PEU": {"erm": (0.774, 0.774), "icp": (1.000, 0.0), "irmv1": (0.215, 0.340)},
    "PES": {"erm": (0.779, 0.774), "icp": (1.000, 0.0), "irmv1": (0.220, 0.340)},
}

# method -> ((train mean, std), (test mean, std)) in %.
_CMNIST_TABLE1: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "erm": ((87.4, 0.2), (17.1, 0.6)),
    "irmv1": ((70.8, 0.9), (66.9, 2.5)),
    "grayscale": ((73.5, 0.2), (73.0, 0.4)),
}

_CMNIST_TABLE2_SOURCE = "Ramé et al. (2022) Table 2, IRM setup (10 restarts)"
# method -> (train, test, gray test), each (mean, std) in %.
_CMNIST_TABLE2: dict[str, tuple[tuple[float, float], ...]] = {
    "erm": ((86.4, 0.2), (14.0, 0.7), (71.0, 0.7)),
    "irmv1": ((71.0, 0.5), (65.6, 1.8), (66.1, 0.2)),
    "vrex": ((71.7, 1.5), (67.2, 1.5), (68.6, 2.2)),
    "fishr": ((71.0, 0.9), (69.5, 1.0), (70.2, 1.1)),
}

#: Reference rows of Table 1 that are not results of a method (train %, test %).
CMNIST_REFERENCE_ROWS: dict[str, tuple[float, float]] = {
    "random guessing (hypothetical)": (50.0, 50.0),
    "optimal invariant model (hypothetical)": (75.0, 75.0),
}


def _build_published() -> tuple[Published, ...]:
    rows: list[Published] = []
    for setup, methods in _SEM_REFERENCE.items():
        for method, pair in methods.items():
            rule: Rule = "icp_pattern" if method == "icp" else "relative_or_se"
            for metric, value in zip(("causal_error", "noncausal_error"), pair, strict=True):
                rows.append(
                    Published(
                        "sem", SEM_PROTOCOL, setup, method, metric, value, None, rule, _SEM_SOURCE
                    )
                )
    for method, ((tr, tr_sd), (te, te_sd)) in _CMNIST_TABLE1.items():
        for metric, value, spread in (("train_acc", tr, tr_sd), ("test_acc", te, te_sd)):
            rows.append(
                Published(
                    "cmnist",
                    CMNIST_PROTOCOL,
                    "",
                    method,
                    metric,
                    value,
                    spread,
                    "published_std_plus_points",
                    _CMNIST_SOURCE,
                )
            )
    metrics = ("train_acc", "test_acc", "gray_test_acc")
    for method, triple in _CMNIST_TABLE2.items():
        for metric, (value, spread) in zip(metrics, triple, strict=True):
            rows.append(
                Published(
                    "cmnist",
                    CMNIST_TABLE2_PROTOCOL,
                    "",
                    method,
                    metric,
                    value,
                    spread,
                    "published_std_plus_points",
                    _CMNIST_TABLE2_SOURCE,
                )
            )
    return tuple(rows)


#: Every published number the scorecard compares against, SEM first.
PUBLISHED: tuple[Published, ...] = _build_published()

TOLERANCE_RULE_TEXT = (
    "A published number counts as reproduced when our value lies within the tolerance "
    "of it, boundary included. "
    "SEM, ERM and IRMv1 (mean causal / non-causal error): tolerance = max(25 % of the "
    "published value, 3 standard errors of our mean), the standard error being our std "
    "over non-diverged draws divided by the square root of their number. "
    "SEM, ICP: the published numbers are read as a pattern; each error falls in a band, "
    f"near 0 (< {ICP_BAND_EDGES[0]}), intermediate ({ICP_BAND_EDGES[0]} to "
    f"< {ICP_BAND_EDGES[1]}) or near 1 (≥ {ICP_BAND_EDGES[1]}, ICP returned the empty "
    "set or as bad), and ICP is reproduced when our mean falls in the same band as the "
    "published one, or within the ERM/IRMv1 tolerance of it. "
    "Colored MNIST (accuracy in %, IRM paper Table 1 and Fishr paper Table 2): "
    "tolerance = 2 published standard deviations + 2 points. Only rows with the "
    "published protocol tag are compared."
)


@dataclass(frozen=True)
class Ours:
    """Our estimate of a published number.

    Attributes
    ----------
    protocol : protocol tag of our rows.
    mean : our mean (same unit as the published value: error, or accuracy in %).
    std : our standard deviation over non-diverged draws / restarts (ddof as in the table).
    n : number of non-diverged draws / restarts behind ``mean``.
    n_diverged : draws / restarts that diverged and are not in ``mean``.
    """

    protocol: str
    mean: float
    std: float
    n: int
    n_diverged: int = 0

    @property
    def standard_error(self) -> float:
        """``std / sqrt(n)``; ``inf`` when ``n`` is 0 (nothing to compare)."""
        return self.std / math.sqrt(self.n) if self.n > 0 else math.inf


def icp_band(value: float) -> int:
    """Index into :data:`ICP_BAND_NAMES` of a mean squared coefficient error."""
    low, high = ICP_BAND_EDGES
    if value < low:
        return 0
    return 1 if value < high else 2


def tolerance(published: Published, ours: Ours) -> float:
    """Allowed ``|ours - published|`` for ``published`` (the numeric part of the rule).

    ``relative_or_se`` and ``icp_pattern``: ``max(0.25 * |published|, 3 * SE(ours))``;
    ``published_std_plus_points``: ``2 * published std + 2`` (accuracy points).
    """
    if published.rule == "published_std_plus_points":
        if published.spread is None:
            raise ValueError(f"{published}: rule needs a published spread")
        return 2.0 * published.spread + 2.0
    return max(0.25 * abs(published.value), 3.0 * ours.standard_error)


def _within(diff: float, tol: float) -> bool:
    return abs(diff) <= tol * (1.0 + BOUNDARY_RTOL) + 1e-15


@dataclass(frozen=True)
class Score:
    """Outcome of comparing one published number with ours.

    ``status`` is ``"yes"``, ``"no"``, ``"not compared"`` (our protocol tag differs
    from the published one, or nothing non-diverged to compare) or ``"not run"`` (the
    run did not include this setup / method). ``note`` explains.
    """

    published: Published
    ours: Ours | None
    difference: float | None
    tolerance: float | None
    status: Literal["yes", "no", "not compared", "not run"]
    note: str


def score(published: Published, ours: Ours | None) -> Score:
    """Apply the tolerance rule to one published number (see :data:`TOLERANCE_RULE_TEXT`)."""
    if ours is None:
        return Score(published, None, None, None, "not run", "no result in this run")
    if ours.protocol != published.protocol:
        return Score(
            published,
            ours,
            None,
            None,
            "not compared",
            f"protocol {ours.protocol!r} is not the published {published.protocol!r}",
        )
    if ours.n <= 0 or not math.isfinite(ours.mean):
        return Score(published, ours, None, None, "not compared", "every run diverged")
    diff = ours.mean - published.value
    tol = tolerance(published, ours)
    inside = _within(diff, tol)
    note = ""
    if published.rule == "icp_pattern":
        same_band = icp_band(ours.mean) == icp_band(published.value)
        note = (
            f"band {ICP_BAND_NAMES[icp_band(ours.mean)]} "
            f"(published: {ICP_BAND_NAMES[icp_band(published.value)]})"
        )
        inside = inside or same_band
    return Score(published, ours, diff, tol, "yes" if inside else "no", note)


def _ours_from(rows: pd.DataFrame, p: Published, count: str, scale: float) -> Ours | None:
    """Our row for ``p`` (its published protocol preferred when several), as an Ours."""
    if rows.empty:
        return None
    if len(rows) > 1:
        same = rows[rows["protocol"] == p.protocol]
        rows = same if not same.empty else rows
    row = rows.iloc[0]
    return Ours(
        protocol=str(row["protocol"]),
        mean=scale * float(row[f"{p.metric}_mean"]),
        std=scale * float(row[f"{p.metric}_std"]),
        n=int(row[count]) - int(row["n_diverged"]),
        n_diverged=int(row["n_diverged"]),
    )


def _sem_ours(sem_errors: pd.DataFrame, p: Published) -> Ours | None:
    rows = sem_errors[(sem_errors["setup"] == p.setup) & (sem_errors["method"] == p.method)]
    return _ours_from(rows, p, "n_draws", 1.0)


def _cmnist_ours(accuracy: pd.DataFrame, p: Published) -> Ours | None:
    # Accuracies are fractions in the tables, percent in Table 1; tables from before the
    # gray test have no gray-test column (nothing to compare).
    if f"{p.metric}_mean" not in accuracy.columns:
        return None
    return _ours_from(accuracy[accuracy["method"] == p.method], p, "n_restarts", 100.0)


def build_scorecard(
    sem_errors: pd.DataFrame | None, cmnist_accuracy: pd.DataFrame | None
) -> list[Score]:
    """Score every published number of the studies that ran.

    Parameters
    ----------
    sem_errors : ``tables/sem_errors.csv`` (one row per protocol, setup, method), or
        ``None`` when the SEM study is disabled (its rows are then left out).
    cmnist_accuracy : ``tables/cmnist_accuracy.csv`` (accuracies as fractions), or
        ``None`` when Colored MNIST is disabled.

    Returns
    -------
    One :class:`Score` per published number of an enabled study, in :data:`PUBLISHED`
    order. Setups or methods the run did not include are ``"not run"``.
    """
    scores: list[Score] = []
    for p in PUBLISHED:
        if p.study == "sem" and sem_errors is not None:
            scores.append(score(p, _sem_ours(sem_errors, p)))
        elif p.study == "cmnist" and cmnist_accuracy is not None:
            scores.append(score(p, _cmnist_ours(cmnist_accuracy, p)))
    return scores


def headline(scores: list[Score]) -> dict[str, int]:
    """Counts for the summary: reproduced, compared, not compared, not run, total."""
    return {
        "reproduced": sum(s.status == "yes" for s in scores),
        "compared": sum(s.status in ("yes", "no") for s in scores),
        "not_compared": sum(s.status == "not compared" for s in scores),
        "not_run": sum(s.status == "not run" for s in scores),
        "total": len(scores),
    }
