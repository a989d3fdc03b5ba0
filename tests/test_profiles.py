"""Snakemake profiles: documented keys, and the local GPU limit of profiles/default."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from snakemake_cli import REPO, TOY_SNAKEFILE, run_snakemake, with_config

PROFILES = sorted((REPO / "profiles").glob("*/config.yaml"))


def test_profiles_found():
    assert {p.parent.name for p in PROFILES} >= {"default", "slurm", "slurm-local"}


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.parent.name)
def test_every_profile_key_has_a_comment(path: Path):
    lines = path.read_text().splitlines()
    keys = yaml.safe_load(path.read_text())
    undocumented = []
    for i, line in enumerate(lines):
        match = re.match(r"([A-Za-z][\w-]*):", line)
        if match:
            previous = next((p for p in reversed(lines[:i]) if p.strip()), "")
            if not previous.lstrip().startswith("#"):
                undocumented.append(match.group(1))
    assert not undocumented, f"{path}: keys without a comment line above: {undocumented}"
    assert keys, f"{path} sets nothing"


def test_default_profile_resumes_and_limits_gpus():
    settings = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    assert settings["rerun-incomplete"] is True
    assert settings["resources"] == {"gpu": 1}
    # Cluster profiles are used with --workflow-profile none, so they resume on their own.
    for name in ("slurm", "slurm-local"):
        cluster = yaml.safe_load((REPO / "profiles" / name / "config.yaml").read_text())
        assert cluster["rerun-incomplete"] is True
        assert cluster["executor"] == "slurm"
        assert "resources" not in cluster


def _train_spans(log_dir: Path) -> list[tuple[float, float]]:
    spans = [json.loads(p.read_text()) for p in sorted(log_dir.glob("*.log"))]
    return sorted((s["start"], s["end"]) for s in spans)


@pytest.mark.slow
@pytest.mark.parametrize(("limit", "overlap"), [(None, False), ("gpu=2", True)])
def test_default_profile_runs_one_gpu_job_at_a_time(limit, overlap, tmp_path):
    """Two 2-second GPU training jobs, 4 cores: profiles/default runs them one after
    the other; lifting the limit to gpu=2 (the control) lets them overlap."""
    results = tmp_path / "results"
    run = run_snakemake(
        [
            "-s",
            TOY_SNAKEFILE,
            "--workflow-profile",
            REPO / "profiles" / "default",
            "--cores",
            "4",
            *(["--resources", limit] if limit else []),
            *with_config((), results_dir=results, gpu_jobs=True, train_seconds=2),
        ],
        tmp_path,
    )
    assert run.returncode == 0, run.stdout[-3000:]
    (_, first_end), (second_start, _) = _train_spans(results / "logs" / "train")
    assert (second_start < first_end) is overlap
