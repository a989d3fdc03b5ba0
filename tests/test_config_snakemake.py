"""Bad configs through Snakemake itself: non-zero exit before any job, the key named, no traceback.

Each test starts one Snakemake process (~2 s), so there are few of them; the full table of
bad inputs is in ``test_config_bad.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def _snakemake() -> str:
    here = Path(sys.executable).parent / "snakemake"
    found = str(here) if here.exists() else shutil.which("snakemake")
    if found is None:
        pytest.skip("snakemake is not installed")
    return found


def _run(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(repo)}
    return subprocess.run(
        [_snakemake(), *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _assert_clean_refusal(proc: subprocess.CompletedProcess[str], *lines: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    for line in lines:
        assert line in out, out
    # The message alone: no Python traceback, no "File ..., line" fragments.
    assert "Traceback" not in out and 'File "' not in out, out
    assert "Building DAG" not in out, out


@pytest.fixture
def smoke_config(repo_root, tmp_path) -> dict:
    with open(repo_root / "config" / "smoke.yaml") as fh:
        config = yaml.safe_load(fh)
    config["results_dir"] = str(tmp_path / "results")
    config["cmnist"]["cache_dir"] = str(tmp_path / "results" / "mnist")
    config["cmnist"]["local_source"] = None
    return config


def test_nested_config_override_is_validated_like_the_file(repo_root):
    proc = _run(repo_root, "-n", "--config", 'sem={"n_draws": 0}', "device=tpu")
    _assert_clean_refusal(
        proc,
        "config key 'sem.n_draws': expected an integer >= 1, found 0",
        "config key 'device': expected one of auto, cpu, cuda, found \"tpu\"",
    )


def test_bad_configfile_stops_a_real_run_before_any_job(repo_root, smoke_config, tmp_path):
    smoke_config["sem"]["setups"] = ["FOU", "FOX"]
    smoke_config["cmnist"]["lambda_grid"] = [-1.0]
    smoke_config["minimal"]["stepz"] = 10
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(smoke_config))
    # Not a dry run: were validation late, jobs would start and create results_dir.
    proc = _run(repo_root, "--cores", "1", "--configfile", str(path))
    _assert_clean_refusal(
        proc,
        "config key 'sem.setups[1]': expected one of FOU, FOS, FEU, FES, POU, POS, PEU, PES, "
        'found "FOX"',
        "config key 'cmnist.lambda_grid[0]': expected a number >= 0, found -1.0",
        "config key 'minimal.stepz': unknown key in 'minimal' (did you mean 'steps'?)",
    )
    assert not Path(smoke_config["results_dir"]).exists()


def test_typed_overrides_pass(repo_root, smoke_config, tmp_path):
    # gpu_jobs=true and the nested numbers arrive as strings; read as YAML they are valid.
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(smoke_config))
    proc = _run(
        repo_root,
        "-n",
        "--configfile",
        str(path),
        "--config",
        "gpu_jobs=true",
        'sem={"n_draws": 3, "irmv1": {"lr": 1e-3}}',
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
