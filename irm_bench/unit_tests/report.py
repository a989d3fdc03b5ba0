"""The unit-test section of the paper-style report and its published-number comparison."""

from __future__ import annotations

import math

import pandas as pd

from irm_bench.report import figures
from irm_bench.report.blocks import Figure, Note, Section, Table
from irm_bench.unit_tests.figures import figure_unit_tests
from irm_bench.unit_tests.protocol import STUDY_METHODS
from irm_bench.unit_tests.reference import (
    PUBLISHED,
    PUBLISHED_PROTOCOL,
    TOLERANCE_RULE_TEXT,
    reproduced,
    tolerance,
)


def _num(value: float) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.3g}"


def comparison_rows(table: pd.DataFrame) -> list[dict]:
    """Published vs ours for every published (task, method) in ``table``'s avg rows.

    Each row: task, method, published mean/std, ours mean/std, difference, tolerance,
    status (``yes``/``no``, or ``not compared`` when ours is not the paper's protocol).
    """
    avg = table[table["env"] == "avg"].set_index(["task", "method"])
    rows = []
    for (task, method), (mean, std) in PUBLISHED.items():
        if (task, method) not in avg.index:
            continue
        ours = avg.loc[(task, method)]
        paper = str(ours["protocol"]) == PUBLISHED_PROTOCOL
        status = ("yes" if reproduced(float(ours["mean"]), mean, std) else "no") if paper else (
            "not compared")  # fmt: skip
        rows.append({
            "task": task, "method": method, "published": mean, "published_std": std,
            "ours": float(ours["mean"]), "ours_std": float(ours["std"]),
            "difference": float(ours["mean"]) - mean, "tolerance": tolerance(mean, std),
            "status": status, "protocol": str(ours["protocol"]),
        })  # fmt: skip
    return rows


def summary_line(table: pd.DataFrame) -> tuple[str, str]:
    """The report summary's line: what ran, and how many published numbers it matched."""
    comp = [r for r in comparison_rows(table) if r["status"] != "not compared"]
    hits = sum(r["status"] == "yes" for r in comp)
    compared = (
        f"{hits} of {len(comp)} published averages reproduced (their own tolerance rule; "
        "not counted in the headline above)"
        if comp
        else "not the paper's protocol, so not compared with the published numbers"
    )
    return (
        "Unit tests (Aubin et al. 2021)",
        f"protocol {', '.join(sorted(set(table['protocol'].astype(str))))}; tasks "
        f"{', '.join(dict.fromkeys(table['task']))}; methods "
        f"{', '.join(STUDY_METHODS[m].label for m in dict.fromkeys(table['method']))}; "
        f"{compared}",
    )


def unit_tests_section(table: pd.DataFrame) -> Section:
    """The report section: protocol note, the figure, the averaged table, the comparison."""
    sec = Section("unit-tests", "Linear unit tests for invariance (Aubin et al. 2021)")
    protocols = ", ".join(sorted(set(table["protocol"].astype(str))))
    seeds = ", ".join(map(str, sorted(set(table["n_data_seeds"]))))
    trials = ", ".join(map(str, sorted(set(table["n_trials"]))))
    sec.add(
        Note(
            "Six tasks (Example1 regression, Example2 and Example3 classification, and their "
            "scrambled versions), 3 environments, 5 invariant and 5 spurious features. Per "
            f"task and method, {trials} hyper-parameter trials (trial 0: the defaults) × "
            f"{seeds} data seeds train as one batched linear program; the trial with the "
            "lowest validation error (summed over environments, averaged over seeds) is "
            "selected and its test error (spurious features shuffled) reported as mean ± std "
            f"over data seeds. Protocol {protocols}. {TOLERANCE_RULE_TEXT}"
        )
    )
    fig = figure_unit_tests(table)
    sec.add(
        Figure(
            "fig-unit-tests",
            figures.to_svg(fig, "fut"),
            "Test error per task, method and environment of the selected trial (mean ± std "
            "over data seeds). Example1: mean squared error; the others: 0–1 error.",
        )
    )
    avg = table[table["env"] == "avg"]
    methods = [m for m in STUDY_METHODS if m in set(avg["method"])]
    rows = []
    for task in dict.fromkeys(avg["task"]):
        cells = [task]
        for m in methods:
            r = avg[(avg["task"] == task) & (avg["method"] == m)]
            cells.append(
                "—" if r.empty else f"{_num(r['mean'].iloc[0])} ± {_num(r['std'].iloc[0])}"
            )
        rows.append(cells)
    sec.add(
        Table(
            "unit-tests-avg",
            "Test error averaged over environments (mean ± mean-over-environments of the std "
            "over data seeds), as the authors' table.",
            ["task"] + [STUDY_METHODS[m].label for m in methods],
            rows,
        )
    )
    comp = comparison_rows(table)
    if comp:
        sec.add(
            Table(
                "unit-tests-published",
                "Published average test errors (the authors' committed results, "
                "data/results_processed.tar.gz) beside ours.",
                ["task", "method", "published", "ours", "difference", "tolerance",
                 "reproduced"],
                [[r["task"], STUDY_METHODS[r["method"]].label,
                  f"{_num(r['published'])} ± {_num(r['published_std'])}",
                  f"{_num(r['ours'])} ± {_num(r['ours_std'])}", _num(r["difference"]),
                  _num(r["tolerance"]), r["status"]] for r in comp],
            )
        )  # fmt: skip
    return sec
