"""The report's model-selection subsections (irm_bench.report.selection).

Built from the committed fixture run's ``sem_draws.csv`` (reference protocol only, so
only ``last_environment``) plus a hand-made hold-out protocol with training-domain
validation records only (no ``test_domain`` or ``last_environment`` column for it):
every printed cell must equal the selection table's value, a missing rule is a dash,
and the published rule is marked.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from irm_bench.report import figures
from irm_bench.report import formatting as f
from irm_bench.report.blocks import plus_minus
from irm_bench.report.selection import selection_section
from irm_bench.sem.aggregate import error_table, selection_table, sweep_records

FIXTURES = Path(__file__).parent / "fixtures" / "run" / "tables"


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    draws = pd.read_csv(FIXTURES / "sem_draws.csv")
    records = sweep_records(draws)
    # A second protocol with training-domain validation only, for one method.
    extra = records[(records["method"] == "erm") & (records["role"] == "test")].assign(
        protocol="sem-holdout-0.2"
    )
    val = extra.drop_duplicates(["setup", "restart"]).assign(role="validation", score=-1.0)
    records = pd.concat([records, extra, val], ignore_index=True)
    return selection_table(records, ["last_environment", "training_domain", "test_domain"])


def test_the_reference_rule_selects_per_draw_by_last_environment_mse(table):
    # FOU, IRMv1, per draw the lowest val_mse of the fixture: draw 0 reg .1 (3.44,
    # causal .553688), 1 reg .1 (5.39, .170016), 2 reg .001 (8.47, .670015), 3 reg .1
    # (1.77, .297940) -> mean .4229148. (The fixture's own "selected" column is
    # hand-set to reg .001 and is not what the rule picks.)
    ref = table[(table["protocol"] == "irm-paper-sem") & (table["metric"] == "causal_error")]
    irm = ref[(ref["setup"] == "FOU") & (ref["method"] == "irmv1")].iloc[0]
    assert irm["mean"] == pytest.approx((0.553688 + 0.170016 + 0.670015 + 0.297940) / 4, abs=1e-6)
    assert irm["selected_counts"] == "9:3;999:1" and irm["n_restarts"] == 4
    # Methods without a grid: every draw's only fit, as Figure 4's table.
    errors = error_table(pd.read_csv(FIXTURES / "sem_draws.csv")).set_index(["setup", "method"])
    for _, r in ref[ref["method"].isin(["erm", "icp"])].iterrows():
        expected = errors.loc[(r["setup"], r["method"])]
        assert r["mean"] == pytest.approx(expected["causal_error_mean"])
        assert r["std"] == pytest.approx(expected["causal_error_std"])


def test_section_prints_the_table_and_marks_missing_rules(table):
    sec = selection_section("sem", table, "Figure 4 uses last_environment.")
    tables = [b for b in sec.blocks if b.kind == "table"]
    assert [t.id for t in tables] == [
        "sem-selection-causal_error",
        "sem-selection-noncausal_error",
    ]
    header = tables[0].header
    assert header == [
        "setup", "method", "last_environment * (irm-paper-sem)",
        "training_domain (sem-holdout-0.2)",
    ]  # fmt: skip
    part = table[table["metric"] == "causal_error"]
    for row in tables[0].rows:
        setup, label = row[0], row[1]
        for cell, (protocol, rule) in zip(
            row[2:],
            [("irm-paper-sem", "last_environment"), ("sem-holdout-0.2", "training_domain")],
            strict=True,
        ):  # fmt: skip
            hit = part[(part["setup"] == setup) & (part["protocol"] == protocol)
                       & (part["rule"] == rule)]  # fmt: skip
            hit = hit[hit["method"].map(figures.method_label) == label]
            if hit.empty:
                assert cell == f.MISSING  # the hold-out protocol ran ERM only
            else:
                r = hit.iloc[0]
                expected = plus_minus(f.err(r["mean"]), f.err(r["std"]))
                assert cell == f"{expected} (n = {int(r['n_restarts'])})"
    note = sec.blocks[0].text
    assert "Figure 4 uses last_environment." in note and "[published comparison]" in note
    assert "never averaged or compared" in note


def test_empty_table_gives_a_note():
    sec = selection_section("unit_tests", pd.DataFrame(columns=["protocol"]), "")
    assert [b.kind for b in sec.blocks] == ["note"]


def _full_report_html(tmp_path, **tables) -> str:
    """The fixture run's full HTML report, with ``tables`` replacing its tables."""
    from test_report import FIXTURES as RUN
    from test_report import NOW, REPO, fixture_config, table_paths

    from irm_bench.report import build_report

    build_report(
        tables={**table_paths(), **tables},
        config=fixture_config(),
        repo=REPO,
        benchmark_dir=RUN / "benchmarks",
        html_path=tmp_path / "report.html",
        pdf_path=None,
        mnist_checksums=RUN / "data/mnist_checksums.json",
        now=NOW,
    )
    return (tmp_path / "report.html").read_text()


def test_full_report_renders_the_selection_subsection(table, tmp_path):
    path = tmp_path / "sem_selection.csv"
    table.to_csv(path, index=False)
    html = _full_report_html(tmp_path, sem_selection=path)
    assert 'id="sem-selection-causal_error"' in html and "Model selection" in html
    assert "Leave-one-out is not run" in html


def test_cmnist_section_prints_accuracy_in_percent_and_the_domainbed_line(tmp_path):
    from irm_bench.report.context import CMNIST_DOMAINBED_REFERENCE, CMNIST_PUBLISHED_RULE

    cm = pd.read_csv(FIXTURES / "cmnist_selection.csv")
    sec = selection_section(
        "cmnist", cm, CMNIST_PUBLISHED_RULE, reference=CMNIST_DOMAINBED_REFERENCE
    )
    (table,) = [b for b in sec.blocks if b.kind == "table"]
    assert table.header == [
        "method", "training_domain (cmnist-select-0.2)", "test_domain (cmnist-select-0.2)",
    ]  # fmt: skip
    rows = {row[0]: row[1:] for row in table.rows}
    # IRMv1 in the fixture: 0.405 ± 0.190 (training domain), 0.662 ± 0.012 (oracle)
    assert rows["IRMv1"] == [
        "40.5 ± 19.0 (n = 3; chose 0:2;91257.2:1)",
        "66.2 ± 1.2 (n = 3; chose 91257.2:3)",
    ]
    assert rows["ERM"][0] == "17.2 ± 0.6 (n = 3)"
    reference = sec.blocks[-1].text
    assert "51.5 ± 0.1" in reference and "57.8 ± 0.2" in reference
    assert "not comparable and not scored" in reference
    html = _full_report_html(tmp_path, cmnist_selection=FIXTURES / "cmnist_selection.csv")
    assert 'id="cmnist-selection-test_acc"' in html and "57.8 ± 0.2" in html


def test_a_run_where_no_rule_has_a_choice_says_so():
    from irm_bench.report.selection import NO_CHOICE

    cm = pd.read_csv(FIXTURES / "cmnist_selection.csv")
    notes = [b.text for b in selection_section("cmnist", cm, "").blocks if b.kind == "note"]
    assert NO_CHOICE not in notes  # the fixture's IRMv1 chose among two λ
    # A Colored MNIST run without a sweep: one setting per method, as "-:<n>".
    single = cm.assign(setting="-", selected_counts="-:" + cm["n_restarts"].astype(str))
    notes = [b.text for b in selection_section("cmnist", single, "").blocks if b.kind == "note"]
    assert NO_CHOICE in notes
