"""Model selection for Colored MNIST: sweep records and the method x rule table.

The IRM paper reports Table 1 with hyper-parameters chosen by its authors, without saying
on which data. Here each method's settings (IRMv1: its λ sweep; every other method: its
one setting) are chosen by the registered rules of :mod:`irm_bench.selection`, from
accuracies logged at every logged step (:func:`irm_bench.cmnist.train.train_stacked`,
forward passes only, no retraining), under the protocol tag
:func:`selection_protocol` (``cmnist-select-0.2``):

``training_domain``
    mean accuracy on ``env1_val`` and ``env2_val``, fresh samples of the two training
    environments' distributions drawn from MNIST's t10k digits
    (:func:`irm_bench.envs.cmnist.make_selection_environments`);
``test_domain``
    the oracle: accuracy on ``test_holdout``, a ``validation_fraction`` part of the test
    environment, at the last logged step (DomainBed's definition).

Reported: accuracy on ``test_rest``, the test environment's other images, for the
setting each restart chooses (``per_restart``, as DomainBed's per-trial-seed selection);
mean and std (``ddof=0``) over restarts. Leave-one-environment-out is refused
(:data:`CMNIST_NO_LEAVE_ONE_OUT`). The training data are Table 1's own, so the Table 1
numbers do not depend on whether selection is enabled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from irm_bench.envs.cmnist import (
    COLOUR_FLIP,
    LABEL_NOISE,
    N_TEST_IMAGES,
    N_TRAIN_IMAGES,
    SELECTION_ENVS,
    TRAIN_ENVS,
    test_holdout_size,
    validation_size,
)
from irm_bench.selection import RECORD_COLUMNS, rule_problems, select

#: Rules the Colored MNIST selection table can apply.
CMNIST_RULES = ("training_domain", "test_domain")
#: Why leave-one-out is not run (the config error and the report say it).
CMNIST_NO_LEAVE_ONE_OUT = (
    "Colored MNIST has two training environments, so leaving one out trains on a single "
    "environment, where every invariance penalty (IRMv1, V-REx, Fishr) vanishes or is "
    "constant: the rule would tune degenerate fits"
)
#: Role of each selection environment's accuracy in the sweep records.
ROLES = {
    "env1_val": "validation",
    "env2_val": "validation",
    "test_holdout": "test_holdout",
    "test_rest": "test",
}
#: The setting of a method without a sweep.
SINGLE_SETTING = "-"
#: Images per training environment when ``max_train_per_env`` is null (25,000).
FULL_TRAIN_PER_ENV = N_TRAIN_IMAGES // len(TRAIN_ENVS)
#: Cross-protocol reference (never scored against our rows): DomainBed's Colored MNIST
#: ERM, its own network and random search, averaged over its three test environments,
#: in %, as the Fishr authors' README (alexrame/fishr) lists them.
DOMAINBED_ERM = {"training_domain": (51.5, 0.1), "test_domain": (57.8, 0.2)}


def selection_protocol(fraction: float) -> str:
    """The protocol tag of the selection records, e.g. ``cmnist-select-0.2``."""
    return f"cmnist-select-{fraction:g}"


def validation_fraction(cmnist: Mapping[str, Any]) -> float | None:
    """``cmnist.selection.validation_fraction``, or ``None`` when selection is disabled
    (a config without the block: enabled with the schema's default 0.2)."""
    block = cmnist.get("selection") or {}
    if not block.get("enabled", True):
        return None
    return float(block.get("validation_fraction", 0.2))


def train_per_env(cmnist: Mapping[str, Any]) -> int:
    """Images per training environment of this config (``max_train_per_env``, else the
    preset's, else 25,000)."""
    from irm_bench.cmnist.presets import PRESETS

    given = cmnist.get("max_train_per_env")
    if given is None:
        preset = PRESETS.get(cmnist.get("preset", "default"))
        given = preset.max_train_per_env if preset is not None else None
    return FULL_TRAIN_PER_ENV if given is None else int(given)


def config_problems(cmnist: Mapping[str, Any]) -> list[str]:
    """One line per bad ``cmnist.selection`` entry, each naming its key (before training).

    An unknown rule (did-you-mean), ``leave_one_out`` (two training environments), and a
    ``validation_fraction`` outside (0, 1) or whose two validation sets would need more
    than MNIST's 10,000 t10k digits. Nothing when selection is disabled.
    """
    fraction = validation_fraction(cmnist)
    if fraction is None:
        return []
    rules = (cmnist.get("selection") or {}).get("rules", CMNIST_RULES)
    problems = rule_problems(
        rules,
        "cmnist.selection.rules",
        len(TRAIN_ENVS),
        CMNIST_RULES,
        {"leave_one_out": CMNIST_NO_LEAVE_ONE_OUT},
    )
    try:
        validation_size(train_per_env(cmnist), fraction)
    except ValueError as err:
        problems.append(str(err))
    return problems


def sweep_records(curves: pd.DataFrame, runs: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """Sweep records (:data:`irm_bench.selection.RECORD_COLUMNS` plus
    ``hparams_protocol``, the protocol tag of the run's hyper-parameters) of every method.

    Parameters
    ----------
    curves
        ``curves.csv``: accuracies of :data:`irm_bench.envs.cmnist.SELECTION_ENVS` at
        every logged step.
    runs
        ``runs.csv``: ``steps`` and ``diverged`` of each run.
    fraction
        The validation fraction (gives the protocol tag).

    Returns
    -------
    pandas.DataFrame
        One row per (method, setting, restart, logged step, selection environment):
        ``score`` the accuracy (a fraction in [0, 1]), ``role`` from :data:`ROLES`.
        IRMv1's settings are its λ sweep points (``setting`` the λ as text) when the
        run has a sweep, else its Table 1 run; every other method has one setting
        (``-``). A diverged run gets NaN scores at its last step, so no rule picks it.

    Raises
    ------
    ValueError
        When ``curves`` holds no selection environment (selection was disabled in
        training).
    """
    from irm_bench.sem.aggregate import format_hparam

    acc = curves[(curves["metric"] == "accuracy") & curves["environment"].isin(list(ROLES))]
    if acc.empty:
        raise ValueError(
            f"curves hold no model-selection environments ({', '.join(SELECTION_ENVS)}): "
            "train with cmnist.selection.enabled true"
        )
    keys = ["method", "study", "lambda", "restart"]
    runs = runs.assign(diverged=runs["diverged"].astype(str).str.lower().isin(["true", "1"]))
    dead = runs[runs["diverged"]]
    parts = []
    for method, rows in acc.groupby("method", sort=False):
        swept = method == "irmv1" and (rows["study"] == "sweep").any()
        study = "sweep" if swept else "table1"
        rows = rows[rows["study"] == study]
        # a diverged run: NaN at its last step (its curves stop where it diverged)
        lost = dead[(dead["method"] == method) & (dead["study"] == study)]
        lost = lost[[*keys, "steps"]].merge(pd.DataFrame({"environment": list(ROLES)}), "cross")
        lost = lost.assign(step=lost["steps"] - 1, value=np.nan, protocol=rows["protocol"].iloc[0])
        bad = rows.merge(lost[keys].drop_duplicates(), on=keys, how="left", indicator=True)
        rows = pd.concat([rows[bad["_merge"].eq("left_only").to_numpy()], lost], ignore_index=True)
        setting = (
            rows["lambda"].map(lambda v: format_hparam("lambda", v)) if swept else SINGLE_SETTING
        )
        parts.append(rows.assign(setting=setting))
    rows = pd.concat(parts, ignore_index=True)
    out = pd.DataFrame(
        {
            "protocol": selection_protocol(fraction),
            "method": rows["method"],
            "setting": rows["setting"].astype(str),
            "restart": rows["restart"].astype(int),
            "left_out": "",
            "step": rows["step"].astype(int),
            "environment": rows["environment"],
            "role": rows["environment"].map(ROLES),
            "score": rows["value"].astype(float),
            "hparams_protocol": rows["protocol"],
        }
    )
    return out[[*RECORD_COLUMNS, "hparams_protocol"]].reset_index(drop=True)


def _descriptions(rule: str, fraction: float, n_train: int) -> tuple[str, str]:
    """(validated on, tested on) of a rule, in words."""
    k = test_holdout_size(N_TEST_IMAGES, fraction)
    validated = {
        "training_domain": (
            f"env1_val, env2_val: {validation_size(n_train, fraction)} fresh samples each of "
            f"env1's / env2's distribution (colour flip {COLOUR_FLIP['env1']:g} / "
            f"{COLOUR_FLIP['env2']:g}, label noise {LABEL_NOISE:g}) from "
            f"MNIST's t10k digits ({fraction:g} x {n_train}); last logged step"
        ),
        "test_domain": (
            f"test_holdout: {k} of the test environment's {N_TEST_IMAGES} images "
            f"({fraction:g}); last logged step"
        ),
    }[rule]
    return validated, f"test_rest: the other {N_TEST_IMAGES - k} test images (accuracy)"


def selection_table(
    records: pd.DataFrame,
    rules: Sequence[str],
    fraction: float,
    n_train: int,
    methods_order: Sequence[str] | None = None,
) -> pd.DataFrame:
    """``cmnist_selection.csv``: method x rule (columns of
    :data:`irm_bench.sem.aggregate.SELECTION_COLUMNS`).

    Each restart chooses its own setting (``per_restart``); ``mean`` and ``std`` (ddof
    0) are the ``test_rest`` accuracy (a fraction) over restarts with a usable setting.
    ``n_train`` (images per training environment) only words ``trained_on``.
    """
    from irm_bench.cmnist.pipeline import method_order
    from irm_bench.sem.aggregate import SELECTION_COLUMNS

    hp_protocol = records.drop_duplicates("method").set_index("method")["hparams_protocol"]
    rows = []
    for rule in rules:
        validated, tested = _descriptions(rule, fraction, n_train)
        for r in select(records, rule, per_restart=True).to_dict("records"):
            rows.append(
                {
                    "study": "cmnist",
                    "protocol": r["protocol"],
                    "setup": "colored-mnist",
                    "rule": rule,
                    "method": r["method"],
                    "metric": "test_acc",
                    "mean": r["test_mean"],
                    "std": r["test_std"],
                    "n_restarts": r["n_restarts"],
                    "n_unselected": r["n_unselected"],
                    "setting": r["setting"],
                    "selected_counts": r["selected_counts"],
                    "trained_on": (
                        f"env1, env2: {n_train} images each, the Table 1 training data "
                        f"(hyper-parameters of {hp_protocol[r['method']]})"
                    ),
                    "validated_on": validated,
                    "tested_on": tested,
                    "published_rule": False,
                }
            )
    table = pd.DataFrame(rows, columns=list(SELECTION_COLUMNS))
    if not len(table):
        return table
    order = list(methods_order) if methods_order else None
    rank = {r: i for i, r in enumerate(rules)}
    table = table.assign(
        _r=table["rule"].map(rank),
        _m=table["method"].map(
            (lambda m: order.index(m) if m in order else len(order)) if order else method_order
        ),
    )
    table = table.sort_values(["_r", "_m"], kind="stable")
    return table.drop(columns=["_r", "_m"]).reset_index(drop=True)


def selection_step(
    curves_csv: str | Path,
    runs_csv: str | Path,
    cmnist: Mapping[str, Any],
    records_out: str | Path,
    table_out: str | Path,
) -> None:
    """Rule ``cmnist_selection``: the sweep records and ``cmnist_selection.csv``.

    Raises ``ValueError`` when selection is disabled in ``cmnist`` or the curves lack
    the selection environments.
    """
    from irm_bench.io import write_csv

    fraction = validation_fraction(cmnist)
    if fraction is None:
        raise ValueError("cmnist.selection.enabled is false: no selection table to build")
    runs = pd.read_csv(runs_csv)
    records = sweep_records(pd.read_csv(curves_csv), runs, fraction)
    n_train = int(runs["n_train_per_env"].iloc[0]) if len(runs) else train_per_env(cmnist)
    rules = (cmnist.get("selection") or {}).get("rules", CMNIST_RULES)
    write_csv(records, records_out)
    write_csv(selection_table(records, rules, fraction, n_train), table_out)
