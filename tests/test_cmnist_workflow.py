"""Smoke run of the Colored MNIST branch of the DAG on real MNIST, subsampled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from irm_bench.mnist import MNIST_FILES


@pytest.mark.slow
def test_cmnist_branch_end_to_end(repo_root, mnist_source, tmp_path):
    results = tmp_path / "results"
    overrides = {
        "results_dir": str(results),
        "sem": {"enabled": False},
        "minimal": {"enabled": False},
        "report": {"enabled": False},
        "cmnist": {
            "local_source": str(mnist_source),
            "cache_dir": str(tmp_path / "mnist"),
            "max_train_per_env": 500,
            "log_every": 5,
            "restarts_per_chunk": 2,  # Table 1 jobs train their 2 restarts stacked
        },
    }
    overlay = tmp_path / "overrides.yaml"
    overlay.write_text(yaml.safe_dump(overrides))
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(repo_root / "Snakefile"),
        "--directory", str(tmp_path),
        "--configfile", str(repo_root / "config/smoke.yaml"), str(overlay),
        "--cores", "2", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(repo_root), "OMP_NUM_THREADS": "2"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-4000:]

    runs = pd.read_csv(results / "cmnist/runs.csv")
    # smoke config: 2 restarts × 6 methods (Table 1's three, V-REx, Fishr, GroupDRO),
    # sweep with 1 restart × 2 λ
    assert sorted(runs.groupby("study").size().items()) == [("sweep", 2), ("table1", 12)]
    protocols = runs.groupby("method")["protocol"].agg(set).to_dict()
    assert protocols == {
        **{m: {"irm-paper-cmnist"} for m in ("erm", "irmv1", "grayscale")},
        **{m: {"fishr-table2-cmnist"} for m in ("vrex", "fishr", "groupdro")},
    }
    assert set(runs["device"]) == {"cpu"}
    assert (runs["n_train_per_env"] == 500).all() and not runs["diverged"].any()
    for col in ("train_acc", "test_acc", "gray_test_acc", "env1_acc", "env2_acc"):
        assert runs[col].between(0, 1).all()
    curves = pd.read_csv(results / "cmnist/curves.csv")
    selection_envs = {"env1_val", "env2_val", "test_holdout", "test_rest"}
    assert set(curves["environment"]) == {"env1", "env2", "test", "gray_test", *selection_envs}
    selection = pd.read_csv(results / "tables/cmnist_selection.csv")
    assert set(selection["protocol"]) == {"cmnist-select-0.2"}
    assert set(selection["rule"]) == {"training_domain", "test_domain"}
    methods = set(runs["method"])  # every method, one row per rule
    assert set(selection["method"]) == methods and len(selection) == 2 * len(methods)
    assert selection["mean"].between(0, 1).all() and (selection["n_restarts"] >= 1).all()
    assert set(curves["metric"]) == {"risk", "accuracy", "penalty"}
    acc = pd.read_csv(results / "tables/cmnist_accuracy.csv")
    assert acc["method"].tolist() == ["erm", "irmv1", "grayscale", "vrex", "fishr", "groupdro"]
    assert (acc["n_restarts"] == 2).all()
    sweep = pd.read_csv(results / "tables/cmnist_lambda_sweep.csv")
    assert sweep["lambda_index"].tolist() == [0, 1]
    for name in ("cmnist_lambda_sweep", "cmnist_curves"):
        for ext in ("pdf", "png"):
            assert (results / f"figures/{name}.{ext}").stat().st_size > 1000
    checks = json.loads((results / "data/mnist_checksums.json").read_text())
    assert {f["name"]: f["sha256"] for f in checks["files"]} == {
        name: spec.sha256 for name, spec in MNIST_FILES.items()
    }
    assert Path(results / "benchmarks/cmnist_train_irmv1.tsv").exists()
