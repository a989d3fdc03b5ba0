"""The unit-test section of the report and its published-number comparison."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from irm_bench.config import validate_config
from irm_bench.report import build_report
from irm_bench.unit_tests.reference import PUBLISHED, PUBLISHED_PROTOCOL, tolerance
from irm_bench.unit_tests.report import comparison_rows, unit_tests_section

REPO = Path(__file__).resolve().parents[1]


def table(protocol: str) -> pd.DataFrame:
    # ERM on Example2 inside its tolerance, IGA on Example3 outside; E0/E1 rows + avg.
    erm_pub, erm_std = PUBLISHED[("Example2", "erm")]
    iga_pub, iga_std = PUBLISHED[("Example3", "iga")]
    erm = erm_pub + 0.9 * tolerance(erm_pub, erm_std)
    iga = iga_pub - 1.1 * tolerance(iga_pub, iga_std)
    rows = []
    for task, method, value in (("Example2", "erm", erm), ("Example3", "iga", iga)):
        for env, v in (("E0", value - 0.01), ("E1", value + 0.01), ("avg", value)):
            rows.append((protocol, task, method, env, v, 0.01, 50, 3, 20, 0, '{"lr": 0.001}'))
    return pd.DataFrame(
        rows,
        columns=["protocol", "task", "method", "env", "mean", "std", "n_data_seeds",
                 "selected_trial", "n_trials", "n_diverged", "hparams"],
    )  # fmt: skip


def test_comparison_follows_the_tolerance_rule():
    rows = {(r["task"], r["method"]): r for r in comparison_rows(table(PUBLISHED_PROTOCOL))}
    assert rows[("Example2", "erm")]["status"] == "yes"
    assert rows[("Example3", "iga")]["status"] == "no"
    assert rows[("Example2", "erm")]["tolerance"] == pytest.approx(2 * 0.007148 + 0.042080)
    other = comparison_rows(table("unit-tests-quick"))
    assert {r["status"] for r in other} == {"not compared"}


def test_report_has_the_unit_test_section(tmp_path):
    path = tmp_path / "unit_tests.csv"
    table(PUBLISHED_PROTOCOL).to_csv(path, index=False)
    sec = unit_tests_section(table(PUBLISHED_PROTOCOL))
    kinds = [b.kind for b in sec.blocks]
    assert kinds == ["note", "figure", "table", "table"]
    avg_table = sec.blocks[2]
    assert avg_table.header == ["task", "ERM", "IGA"] and len(avg_table.rows) == 2
    config = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    for study in ("sem", "cmnist", "minimal"):
        config[study]["enabled"] = False
    config["unit_tests"]["enabled"] = True
    config = validate_config(config, base_dir=tmp_path, check_paths=False)
    html_path = tmp_path / "report.html"
    build_report({"unit_tests": path}, config, tmp_path, tmp_path, html_path, None)
    html = html_path.read_text()
    assert "Linear unit tests for invariance" in html and html.count("<svg") == 1
    assert "not compared" not in html and ">no<" in html.replace(" ", "")
    assert "1 of 2 published averages reproduced" in html
