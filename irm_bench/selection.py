"""Model-selection rules for hyper-parameter sweeps, and the protocol guard.

How a number's hyper-parameters were chosen decides what it means (Gulrajani &
Lopez-Paz 2021, "In Search of Lost Domain Generalization", arXiv:2007.01434, Section 3).
Three rules are registered in :data:`RULES`, each applied per method to a tidy table of
sweep records (:data:`RECORD_COLUMNS`, one row per run, step and evaluated
environment):

``training_domain``
    the setting with the best mean score on data held out from the *training*
    environments (``role == "validation"`` in runs on all training environments);
``leave_one_out``
    the setting with the best mean score on the training environment left out of
    training (runs with ``left_out`` set, scored on that environment), averaged over
    which one is left out; needs at least two training environments;
``test_domain``
    the oracle: the best score on a held-out part of the test environment
    (``role == "test_holdout"``), at the last checkpoint, as DomainBed defines it;
``last_environment``
    the IRM paper's SEM rule (its reference ``code/experiment_synthetic``): the best score
    on the whole environment left out of training (``role == "last_environment"``), the
    same samples the errors are then reported for (an oracle on that environment).

Scores are "larger is better" (accuracy, or minus a risk). Every rule scores the last
logged step of each run, takes the first best setting in table order on ties, and
reports the selected setting's ``role == "test"`` value: mean and standard deviation
(``ddof=0``) over restarts. By default one setting is chosen per method from the
validation score averaged over restarts (the unit-test study's authors); with
``per_restart=True`` each restart chooses its own (DomainBed's per-trial-seed selection,
and the IRM paper's per-draw SEM selection). A setting whose validation score is NaN in
any restart (a diverged model) is never chosen. A rule never mixes protocols:
:func:`check_one_protocol` refuses a table carrying more than one protocol tag.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from irm_bench.registry import lookup

#: Columns of a sweep-record table.
RECORD_COLUMNS = (
    "protocol",  # protocol tag: which environments trained, validated, tested
    "method",
    "setting",  # hyper-parameter setting id (e.g. a λ grid index)
    "restart",  # restart (or data draw)
    "left_out",  # training environment left out of this run, "" for none
    "step",
    "environment",
    "role",  # "validation", "test", "test_holdout" or "last_environment"
    "score",  # larger is better
)


class ProtocolMismatchError(ValueError):
    """Rows of different protocol tags were about to be averaged or compared."""


def check_one_protocol(records: pd.DataFrame, what: str = "rows") -> str:
    """The single protocol tag of ``records``.

    Raises
    ------
    ProtocolMismatchError
        When ``records`` carries two or more tags; the message names them.
    """
    tags = sorted(pd.unique(records["protocol"]).tolist())
    if len(tags) != 1:
        raise ProtocolMismatchError(
            f"refusing to average or compare {what} of different protocols: "
            f"{' and '.join(repr(t) for t in tags) or 'none'}"
        )
    return tags[0]


def _last_step(rows: pd.DataFrame) -> pd.DataFrame:
    last = rows.groupby(["setting", "restart", "left_out"])["step"].transform("max")
    return rows[rows["step"] == last]


def _per_restart(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean score per (setting, restart), over environments and left-out choices; NaN
    (a diverged model) propagates."""
    rows = _last_step(rows)
    keys = ["setting", "restart", "left_out"]
    by_run = rows.groupby(keys, sort=False)["score"].apply(lambda v: v.mean(skipna=False))
    return (
        by_run.groupby(level=["setting", "restart"], sort=False)
        .apply(lambda v: v.mean(skipna=False))
        .reset_index()
    )


def _validation_training_domain(rows: pd.DataFrame) -> pd.DataFrame:
    return _per_restart(rows[(rows["role"] == "validation") & (rows["left_out"] == "")])


def _validation_leave_one_out(rows: pd.DataFrame) -> pd.DataFrame:
    runs = rows[rows["left_out"] != ""]
    if runs["left_out"].nunique() < 2:
        raise ValueError(
            "leave_one_out needs runs leaving out each of >= 2 training environments, "
            f"found {sorted(runs['left_out'].unique().tolist())}"
        )
    held = runs[(runs["role"] == "validation") & (runs["environment"] == runs["left_out"])]
    return _per_restart(held)


def _validation_test_domain(rows: pd.DataFrame) -> pd.DataFrame:
    return _per_restart(rows[(rows["role"] == "test_holdout") & (rows["left_out"] == "")])


def _validation_last_environment(rows: pd.DataFrame) -> pd.DataFrame:
    return _per_restart(rows[(rows["role"] == "last_environment") & (rows["left_out"] == "")])


@dataclass(frozen=True)
class SelectionRule:
    """A registered rule: which records validate, and which runs report.

    ``validation(records) -> (setting, restart, score)`` frame; ``reports_left_out``
    says whether the reported test values come from the left-out runs (leave-one-out)
    or from runs on all training environments.
    """

    name: str
    label: str
    validation: Callable[[pd.DataFrame], pd.DataFrame]
    reports_left_out: bool = False


RULES: dict[str, SelectionRule] = {
    rule.name: rule
    for rule in (
        SelectionRule(
            "training_domain", "training-domain validation", _validation_training_domain
        ),
        SelectionRule(
            "leave_one_out",
            "leave-one-environment-out",
            _validation_leave_one_out,
            reports_left_out=True,
        ),
        SelectionRule("test_domain", "test-domain oracle", _validation_test_domain),
        SelectionRule(
            "last_environment",
            "last-environment validation (IRM paper's SEM code)",
            _validation_last_environment,
        ),
    )
}


def get_rule(name: str) -> SelectionRule:
    """Look up a selection rule; the error names the closest match and lists all."""
    return lookup(RULES, name, "selection rule")


def _best(scores: pd.Series) -> object | None:
    """The first index of the largest score; NaN never wins; ``None`` if all NaN."""
    values = scores.to_numpy(dtype=float)
    if np.isnan(values).all():
        return None
    return scores.index[int(np.argmax(np.where(np.isnan(values), -np.inf, values)))]


def _counts(settings: list) -> str:
    """``a:3;b:1`` in order of first appearance."""
    seen = pd.Series(settings, dtype=object).value_counts(sort=False)
    return ";".join(f"{k}:{int(v)}" for k, v in seen.items())


def select(
    records: pd.DataFrame,
    rule: str | SelectionRule,
    per_restart: bool = False,
    skip_missing: bool = False,
) -> pd.DataFrame:
    """Apply ``rule`` to each method of a sweep-record table.

    Parameters
    ----------
    records
        Columns :data:`RECORD_COLUMNS`; one protocol tag only.
    rule
        A rule name of :data:`RULES` or the rule itself.
    per_restart
        Choose a setting per restart (DomainBed; the IRM paper's per-draw SEM rule)
        instead of one setting per method from the score averaged over restarts.
    skip_missing
        Leave out a method without the rule's validation records instead of raising
        (a table from a protocol that lacks the rule's data).

    Returns
    -------
    pandas.DataFrame
        One row per method: ``protocol, rule, method, setting, selected_counts,
        validation_score, n_restarts, n_unselected, test_mean, test_std`` (std with
        ``ddof=0``); no rows when every method was skipped. ``setting`` is the chosen
        setting (per restart: the most often chosen one, first on ties),
        ``selected_counts`` how often each was chosen (``b:2``), ``n_unselected`` the
        restarts with no usable setting (every one diverged), left out of the mean.

    Raises
    ------
    ProtocolMismatchError
        When ``records`` mixes protocol tags.
    KeyError
        For an unknown rule.
    ValueError
        When the rule's records are missing (e.g. leave-one-out without left-out runs).
    """
    rule = get_rule(rule) if isinstance(rule, str) else rule
    protocol = check_one_protocol(records, "sweep records")
    missing = set(RECORD_COLUMNS) - set(records.columns)
    if missing:
        raise ValueError(f"sweep records lack columns {sorted(missing)}")
    out = []
    for method, rows in records.groupby("method", sort=False):
        val = rule.validation(rows)
        if val.empty:
            if skip_missing:
                continue
            raise ValueError(f"rule {rule.name!r}: no validation records for method {method!r}")
        chosen = rows[rows["role"] == "test"]
        chosen = chosen[(chosen["left_out"] != "") == rule.reports_left_out]
        test = _per_restart(chosen).set_index(["setting", "restart"])["score"]
        if per_restart:
            picks = {
                restart: _best(group.set_index("setting")["score"])
                for restart, group in val.groupby("restart", sort=False)
            }
            picked = {r: s for r, s in picks.items() if s is not None}
            values = np.array([test.get((s, r), np.nan) for r, s in picked.items()], dtype=float)
            scores = val.set_index(["setting", "restart"])["score"]
            val_score = float(np.mean([scores[(s, r)] for r, s in picked.items()] or [np.nan]))
            settings = list(picked.values())
            counts = pd.Series(settings, dtype=object).value_counts(sort=False)
            setting = counts.index[int(np.argmax(counts.to_numpy()))] if settings else None
            n_unselected = len(picks) - len(picked)
        else:
            means = val.groupby("setting", sort=False)["score"].apply(
                lambda v: v.mean(skipna=False)
            )
            setting = _best(means)
            values = (
                test.xs(setting, level="setting").to_numpy(dtype=float)
                if setting is not None and setting in test.index.get_level_values("setting")
                else np.array([])
            )
            val_score = float(means[setting]) if setting is not None else np.nan
            settings = [setting] * len(values) if setting is not None else []
            n_unselected = 0 if setting is not None else int(val["restart"].nunique())
        values = values[np.isfinite(values)]
        out.append(
            {
                "protocol": protocol,
                "rule": rule.name,
                "method": method,
                "setting": setting,
                "selected_counts": _counts(settings),
                "validation_score": val_score,
                "n_restarts": len(values),
                "n_unselected": n_unselected,
                "test_mean": float(values.mean()) if len(values) else np.nan,
                "test_std": float(values.std(ddof=0)) if len(values) else np.nan,
            }
        )
    return pd.DataFrame(out)


def holdout_split(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Split ``range(n)`` into (training, validation) index arrays.

    ``fraction`` of the rows (rounded, at least one, never all) go to validation, drawn
    by ``rng`` (seed it from the data seed: same seed, same split). Both arrays are
    sorted and disjoint. Raises ``ValueError`` for a fraction outside (0, 1) or
    ``n < 2``.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must lie in (0, 1), found {fraction}")
    if n < 2:
        raise ValueError(f"need >= 2 rows to hold some out, found {n}")
    k = min(max(round(n * fraction), 1), n - 1)
    perm = rng.permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def rule_problems(
    rules: Sequence[str],
    key: str,
    n_training_envs: int,
    available: Sequence[str],
    unavailable_why: Mapping[str, str] | None = None,
) -> list[str]:
    """One-line problems of a study's ``<study>.selection.rules`` list, before training.

    An unknown rule (did-you-mean, the known ones listed); ``leave_one_out`` with fewer
    than two training environments; a registered rule the study does not run
    (``unavailable_why`` says why). Each line names the config key (``key[i]``) and says
    what was expected and what was found.
    """
    problems = []
    for i, name in enumerate(rules):
        where = f"config key '{key}[{i}]'"
        try:
            get_rule(name)
        except KeyError as err:
            problems.append(f"{where}: expected a selection rule, found {name!r} ({err.args[0]})")
            continue
        if name == "leave_one_out" and n_training_envs < 2:
            problems.append(
                f"{where}: expected >= 2 training environments for leave_one_out, found "
                f"{n_training_envs}"
            )
        elif name not in available:
            why = (unavailable_why or {}).get(name, "")
            problems.append(
                f"{where}: expected one of the rules this study runs ({', '.join(available)}), "
                f"found {name!r}{' (' + why + ')' if why else ''}"
            )
    return problems
