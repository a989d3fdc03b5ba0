"""The SEM and minimal branches of the workflow: lint, dry runs, a real tiny run, and a
bad config stopping the DAG with the key named."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml


def _snakemake(repo, *args, timeout=900):
    env = {**os.environ, "PYTHONPATH": str(repo)}
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=repo, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _config(repo, tmp_path, base="config/smoke.yaml", **sections):
    with open(repo / base) as fh:
        config = yaml.safe_load(fh)
    config["results_dir"] = str(tmp_path / "results")
    config["cmnist"]["enabled"] = False
    config["report"]["enabled"] = False
    for name, patch in sections.items():
        config[name].update(patch)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_lint_is_clean(repo_root):
    out = _snakemake(repo_root, "--lint", "--configfile", "config/smoke.yaml")
    assert out.returncode == 0, out.stdout + out.stderr


def test_dry_run_of_the_default_protocol_plans_one_job_per_setup(repo_root, tmp_path):
    cfg = _config(repo_root, tmp_path, base="config.yaml")
    out = _snakemake(repo_root, "-n", "--configfile", str(cfg))
    assert out.returncode == 0, out.stderr
    # The "Job stats" table: "<rule> <count>" lines.
    stats = [line.split() for line in out.stdout.splitlines()]
    counts = {
        row[0]: row[1]
        for row in stats
        if len(row) == 2 and row[1].isdigit() and row[0].startswith(("sem_", "minimal_"))
    }
    assert counts == {
        "sem_fit": "8", "sem_aggregate": "1", "sem_figures": "1",
        "minimal_train": "1", "minimal_figure": "1",
    }  # fmt: skip


def test_disabled_sections_plan_no_jobs(repo_root, tmp_path):
    cfg = _config(repo_root, tmp_path, sem={"enabled": False}, minimal={"enabled": False})
    out = _snakemake(repo_root, "-n", "--configfile", str(cfg))
    assert out.returncode == 0, out.stderr
    assert "sem_fit" not in out.stdout and "minimal_train" not in out.stdout


def test_bad_config_stops_with_the_key_named(repo_root, tmp_path):
    cfg = _config(repo_root, tmp_path, sem={"n_per_env": -5})
    out = _snakemake(repo_root, "-n", "--configfile", str(cfg))
    assert out.returncode != 0
    assert "sem.n_per_env" in out.stdout + out.stderr


@pytest.mark.slow
def test_smoke_run_writes_every_sem_and_minimal_output(repo_root, tmp_path):
    cfg = _config(repo_root, tmp_path)
    out = _snakemake(repo_root, "--cores", "2", "--configfile", str(cfg))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    res = tmp_path / "results"
    errors = pd.read_csv(res / "tables/sem_errors.csv")
    # setups FOU, PES x methods erm, icp, irmv1, vrex, fishr, groupdro
    assert len(errors) == 2 * 6
    assert (errors["n_draws"] == 4).all() and (errors["n_diverged"] == 0).all()
    assert errors["causal_error_mean"].notna().all()
    # ERM on FOU: the pooled least squares puts ~0.1 weight on each effect (reference .009).
    fou_erm = errors.query("setup == 'FOU' and method == 'erm'").iloc[0]
    assert 0.002 < fou_erm["causal_error_mean"] < 0.05
    draws = pd.read_csv(res / "tables/sem_draws.csv")
    grid = {"erm": 1, "icp": 1, "irmv1": 3, "vrex": 2, "fishr": 2, "groupdro": 2}
    assert len(draws) == 2 * 4 * sum(grid.values())
    assert draws.groupby("method").size().to_dict() == {m: 8 * g for m, g in grid.items()}
    sweep = pd.read_csv(res / "tables/sem_lambda_sweep.csv")
    assert len(sweep) == 2 * (3 + 2 + 2 + 2)
    irm = sweep[sweep["method"] == "irmv1"]
    assert set(irm["lambda"].round(6)) == {float("inf"), 999.0, 9.0}
    assert set(sweep.loc[sweep["method"] == "groupdro", "hparam_value"]) == {0.01, 1.0}
    counts = pd.read_csv(res / "tables/sem_selected_lambda.csv")
    assert counts.groupby(["setup", "method"])["count"].sum().eq(4).all()
    assert set(counts["method"]) == {"irmv1", "vrex", "fishr", "groupdro"}
    coefs = pd.read_csv(res / "tables/sem_coefficients.csv")
    assert len(coefs) == len(draws) * 10
    # Model selection: the reference protocol has only its own rule, on all 4 draws; the
    # hold-out protocol (smoke: holdout_draws 2) every rule, on draws 0 and 1.
    sel = pd.read_csv(res / "tables/sem_selection.csv")
    ref = sel[sel["protocol"] == "irm-paper-sem"]
    held = sel[sel["protocol"] == "sem-holdout-0.2"]
    assert set(ref["rule"]) == {"last_environment"} and (ref["n_restarts"] == 4).all()
    assert set(held["rule"]) == {"last_environment", "training_domain", "test_domain"}
    assert (held["n_restarts"] == 2).all() and len(held) == 3 * 2 * 2 * 6
    assert sel["published_rule"].eq(sel["protocol"] == "irm-paper-sem").all()
    fig4 = errors.set_index(["setup", "method"])["causal_error_mean"]
    ours = ref[ref["metric"] == "causal_error"].set_index(["setup", "method"])["mean"]
    pd.testing.assert_series_equal(ours.sort_index(), fig4.loc[ours.index].sort_index(),
                                   check_names=False)  # fmt: skip
    records = pd.read_csv(res / "tables/sem_selection_records.csv")
    assert set(records["protocol"]) == {"irm-paper-sem", "sem-holdout-0.2"}
    final = json.loads((res / "minimal/final.json").read_text())
    assert final["steps"] == 2000 and len(final["phi"]) == 4
    trajectory = pd.read_csv(res / "minimal/trajectory.csv")
    assert set(trajectory["protocol"]) == {"irm-paper-appendix"}
    for name in ("sem_errors", "sem_lambda_sweep", "minimal_trajectory"):
        for ext in ("png", "pdf"):
            assert (res / f"figures/{name}.{ext}").stat().st_size > 1000
    for bench in ("sem_fit_FOU_0", "sem_fit_PES_1", "sem_aggregate", "minimal_train"):
        assert (res / f"benchmarks/{bench}.tsv").exists()
