"""Runs that really diverge are flagged, counted and listed (issue: reliability, item 4).

Two settings that truly blow up through the whole pipeline:
- the appendix example with SGD at lr = 10: its quartic penalty overflows within a
  few steps (float64);
- Colored MNIST IRMv1 at λ = 1e40: after the anneal step λ·penalty overflows float32.
  (λ = 1e12 does not diverge under the reference's scaling, which divides the whole
  loss by λ_t when λ_t > 1.)
Aggregation must not crash, must count them in ``n_diverged``, keep them out of the
means, and the report must list them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from test_report import parse, records

pytestmark = pytest.mark.slow

HUGE_LAMBDA = 1e40


def test_diverging_runs_are_recorded_counted_and_reported(repo_root, mnist_source, tmp_path):
    results = tmp_path / "results"
    overrides = {
        "results_dir": str(results),
        "sem": {"enabled": False},
        "minimal": {"lr": 10.0, "steps": 2000},
        "cmnist": {
            "local_source": str(mnist_source),
            "cache_dir": str(tmp_path / "mnist"),
            "methods": ["erm", "irmv1"],
            "lambda_grid": [0.0, HUGE_LAMBDA],
            "max_train_per_env": 500,
        },
    }
    overlay = tmp_path / "overrides.yaml"
    overlay.write_text(yaml.safe_dump(overrides))
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(repo_root / "Snakefile"),
        "--directory", str(tmp_path), "--cores", "2", "--quiet",
        "--configfile", str(repo_root / "config/smoke.yaml"), str(overlay),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-4000:]

    # Appendix example: stopped early, at the step it blew up, with a finite φ kept.
    final = json.loads((results / "minimal/final.json").read_text())
    assert final["diverged"] is True
    assert 0 < final["diverged_step"] < 2000
    trajectory = pd.read_csv(results / "minimal/trajectory.csv")
    assert trajectory["step"].max() == final["diverged_step"]

    # Colored MNIST: every restart at the huge λ diverged at the anneal step; λ = 0 not.
    runs = pd.read_csv(results / "cmnist/runs.csv")
    huge = runs[runs["lambda"] == HUGE_LAMBDA]
    assert len(huge) > 0 and huge["diverged"].all()
    assert (huge["diverged_step"] == huge["anneal_steps"]).all()
    assert not runs[runs["lambda"] != HUGE_LAMBDA]["diverged"].any()

    sweep = pd.read_csv(results / "tables/cmnist_lambda_sweep.csv").set_index("lambda")
    assert sweep.loc[HUGE_LAMBDA, "n_diverged"] == len(huge[huge["study"] == "sweep"])
    assert pd.isna(sweep.loc[HUGE_LAMBDA, "test_acc_mean"])
    assert sweep.loc[0.0, "n_diverged"] == 0 and 0 <= sweep.loc[0.0, "test_acc_mean"] <= 1

    # The report lists each of them, with its step, in the diverged-runs table.
    html = (results / "report/report.html").read_text()
    listed = records(parse(html), "cmnist-diverged")
    assert len(listed) == len(huge)
    assert sorted(int(r["diverged at step"]) for r in listed) == sorted(huge["diverged_step"])
    assert f"diverged at step {final['diverged_step']}" in html
