"""The unit-test branch of the workflow: a real tiny run, and bad input stopping the DAG."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml
from snakemake_cli import REPO, run_snakemake


def _config(tmp_path: Path, **unit_tests) -> Path:
    config = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    config["results_dir"] = str(tmp_path / "results")
    for study in ("sem", "cmnist", "minimal", "report"):
        config[study]["enabled"] = False
    config["unit_tests"].update({"enabled": True, **unit_tests})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_tiny_run_writes_the_table_and_figure(tmp_path):
    cfg = _config(tmp_path, tasks=["Example1s", "Example3"], methods=["erm", "andmask", "oracle"])
    out = run_snakemake(["--cores", "2", "--configfile", cfg], REPO)
    assert out.returncode == 0, out.stdout[-3000:]
    results = tmp_path / "results"
    table = pd.read_csv(results / "tables/unit_tests.csv")
    # 2 tasks x 3 methods x (3 environments + avg)
    assert len(table) == 2 * 3 * 4
    assert set(table["env"]) == {"E0", "E1", "E2", "avg"}
    assert set(table["protocol"]) == {"unit-tests-quick-custom"}
    assert (table["n_data_seeds"] == 2).all() and (table["n_trials"] == 2).all()
    runs = pd.read_csv(results / "unit_tests/runs/Example3.csv")
    # 3 methods x 2 trials x 2 seeds x 4 splits (test_holdout too) x 3 environments
    assert len(runs) == 3 * 2 * 2 * 4 * 3
    sel = pd.read_csv(results / "tables/unit_tests_selection.csv")
    # 2 tasks x 3 methods x 2 rules; the authors' rule picks the results table's trial
    assert len(sel) == 2 * 3 * 2 and set(sel["rule"]) == {"training_domain", "test_domain"}
    assert sel["published_rule"].eq(sel["rule"] == "training_domain").all()
    avg = table[table["env"] == "avg"].set_index(["task", "method"])
    mine = sel[sel["rule"] == "training_domain"].set_index(["task", "method"])
    assert (mine["setting"] == "trial " + avg.loc[mine.index, "selected_trial"].astype(str)).all()
    assert (mine["mean"] - avg.loc[mine.index, "mean"]).abs().max() < 1e-12
    assert (results / "figures/unit_tests.png").stat().st_size > 0
    assert (results / "figures/unit_tests.pdf").stat().st_size > 0


def test_bad_input_stops_before_any_job(tmp_path):
    # Schema problems first (a dimension < 1), then the study's own checks.
    out = run_snakemake(["-n", "--configfile", _config(tmp_path, dim_spu=0)], REPO)
    assert out.returncode == 1
    assert "config key 'unit_tests.dim_spu': expected an integer >= 1, found 0" in out.stdout
    cfg = _config(tmp_path, tasks=["Example2", "Exampel3"], n_envs=4)
    out = run_snakemake(["-n", "--configfile", cfg], REPO)
    assert out.returncode == 1
    assert "config key 'unit_tests.tasks[1]'" in out.stdout and "'Example3'" in out.stdout
    assert "config key 'unit_tests.n_envs': Example2 defines 3 environments" in out.stdout
    assert "Traceback" not in out.stdout and "unit_tests_train" not in out.stdout
