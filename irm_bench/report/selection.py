"""The report's model-selection subsections: one method x rule table per study.

Built from a study's tidy selection table (``sem_selection.csv``,
``cmnist_selection.csv``, ``unit_tests_selection.csv``; :mod:`irm_bench.selection`).
Columns are the (protocol, rule) pairs present, in table order, so a study lacking a rule
simply has no column for it and a (row, rule) pair without a value shows a dash. Every
number is a test value (the SEM's coefficient errors, Colored MNIST's test accuracy in %,
the unit tests' test split): the test environment is reported on its own, never averaged
with a training environment.
"""

from __future__ import annotations

import pandas as pd

from irm_bench.report import figures
from irm_bench.report import formatting as f
from irm_bench.report.blocks import Note, Section, Table, plus_minus
from irm_bench.selection import RULES

#: Per study: the column naming a problem instance (``None``: a single problem, no
#: column), and its header.
STUDY_KEYS = {"sem": ("setup", "setup"), "cmnist": (None, None), "unit_tests": ("task", "task")}
#: What a restart is in each study (each draw / data seed chooses per the rule).
RESTARTS = {
    "sem": "SEM draws (each draw chooses its own setting)",
    "cmnist": "restarts (each restart chooses its own setting)",
    "unit_tests": "data seeds",
}
#: Studies whose cells also say which settings the restarts chose (``λ:count``).
WITH_SETTING = {"cmnist"}
#: How each study's values print (default: :func:`formatting.err`).
FORMATS = {"cmnist": f.pct}
METRIC_LABELS = {
    "test_acc": "test_rest accuracy (%)",
    "causal_error": "causal coefficient error",
    "noncausal_error": "non-causal coefficient error",
    "test_error": "test error (mean over environments)",
}


#: Said when no rule had a choice: every method trained one setting (e.g. Colored MNIST
#: without a λ sweep), so every rule reports the same runs.
NO_CHOICE = (
    "No rule had a choice to make in this run: every method trained a single setting, "
    "so each rule reports the same runs. A grid gives the rules candidates (Colored "
    "MNIST: preset paper, or cmnist.lambda_grid with cmnist.sweep_restarts)."
)


def _cell(r: pd.Series, fmt=f.err, with_setting: bool = False) -> str:
    value = plus_minus(fmt(r["mean"]), fmt(r["std"]))
    if value == f.MISSING:
        return value
    counts = str(r.get("selected_counts", ""))
    chosen = f"; chose {counts}" if with_setting and not counts.startswith("-:") else ""
    return f"{value} (n = {int(r['n_restarts'])}{chosen})"


def selection_section(
    study: str, table: pd.DataFrame, published_text: str, reference: str = ""
) -> Section:
    """The ``Model selection`` subsection of ``study`` (``sem``, ``cmnist`` or
    ``unit_tests``); ``reference``: a cross-protocol reference line, printed as its own
    note after the tables (never a column, never scored)."""
    key, key_label = STUDY_KEYS[study]
    fmt = FORMATS.get(study, f.err)
    sec = Section(f"{study}-selection", "Model selection")
    if table.empty:
        sec.add(Note("No selection rows in this run: the selection table is empty."))
        return sec
    columns = list(dict.fromkeys(zip(table["protocol"], table["rule"], strict=True)))
    published = {
        (p, r) for p, r, flag in zip(table["protocol"], table["rule"], table["published_rule"],
                                     strict=True) if str(flag).lower() == "true"
    }  # fmt: skip
    descr = table.drop_duplicates(["protocol", "rule"])
    lines = []
    for _, r in descr.iterrows():
        rule = RULES[r["rule"]].label if r["rule"] in RULES else r["rule"]
        mark = " [published comparison]" if (r["protocol"], r["rule"]) in published else ""
        lines.append(
            f"{r['rule']} ({rule}) under protocol {r['protocol']}{mark}: trained on "
            f"{r['trained_on']}; validated on {r['validated_on']}; tested on {r['tested_on']}."
        )
    sec.add(
        Note(
            "Each column is one selection rule under one protocol tag; rows of different "
            "protocols are never averaged or compared, and published numbers are compared "
            f"only with the column of their own rule. {published_text} " + " ".join(lines)
        )
    )
    for metric in dict.fromkeys(table["metric"]):
        part = table[table["metric"] == metric]
        rows = []
        by = ["method"] if key is None else [key, "method"]
        for keys, group in part.groupby(by, sort=False):
            *k, method = keys if isinstance(keys, tuple) else (keys,)
            cells = {
                (r["protocol"], r["rule"]): _cell(r, fmt, study in WITH_SETTING)
                for _, r in group.iterrows()
            }
            rows.append(
                [*map(str, k), figures.method_label(method)]
                + [cells.get(c, f.MISSING) for c in columns]
            )
        header = (
            ([] if key is None else [key_label])
            + ["method"]
            + [f"{rule}{' *' if (p, rule) in published else ''} ({p})" for p, rule in columns]
        )
        sec.add(
            Table(
                f"{study}-selection-{metric}",
                f"{METRIC_LABELS.get(metric, metric)} of the setting each rule selects: mean ± "
                f"std (ddof 0) over {RESTARTS.get(study, 'restarts')} (n); * marks the rule "
                "of the published comparison; — where a rule has no value.",
                header,
                rows,
            )
        )
    if (
        "selected_counts" in table
        and table["selected_counts"].astype(str).str.startswith("-:").all()
    ):
        sec.add(Note(NO_CHOICE))
    if reference:
        sec.add(Note(reference))
    return sec
