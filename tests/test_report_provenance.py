"""Provenance: config hash, git state, benchmark files, MNIST checksums."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from irm_bench import provenance as pv

FIXTURES = Path(__file__).parent / "fixtures" / "run"


def test_config_hash_is_canonical() -> None:
    a = {"sem": {"n_draws": 200, "setups": ["FOU"]}, "device": "auto"}
    b = {"device": "auto", "sem": {"setups": ["FOU"], "n_draws": 200}}
    assert pv.config_hash(a) == pv.config_hash(b)
    assert pv.config_hash(a) != pv.config_hash({**a, "device": "cpu"})
    # sha256 of the canonical JSON, computed by hand.
    import hashlib

    blob = '{"device":"auto","sem":{"n_draws":200,"setups":["FOU"]}}'
    assert pv.config_hash(a) == hashlib.sha256(blob.encode()).hexdigest()
    with pytest.raises(ValueError):
        pv.canonical_json({"x": float("nan")})


def test_git_state_of_a_fresh_repo(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(tmp_path), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    assert pv.git_state(tmp_path) == pv.GitState(None, None)  # not a checkout
    git("init", "-q")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / ".gitignore").write_text("results/\n")
    git("add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x")
    (tmp_path / "results").mkdir()
    (tmp_path / "results/out.csv").write_text("ignored output")
    state = pv.git_state(tmp_path)
    assert state.commit == git("rev-parse", "HEAD") and state.dirty is False
    (tmp_path / "a.txt").write_text("b")
    state = pv.git_state(tmp_path)
    assert state.dirty is True and state.changed == ("a.txt",)


def test_benchmark_files_and_study_times() -> None:
    records = pv.read_benchmarks(FIXTURES / "benchmarks")
    by_job = {(r.study, r.job): r for r in records}
    assert by_job[("sem", "train_FOU_0")].seconds == 101.5
    assert by_job[("sem", "train_FOU_0")].max_rss_mb == pytest.approx(812.3)
    times = {t.study: t for t in pv.study_times(records)}
    assert times["sem"].n_jobs == 3
    assert times["sem"].job_seconds == pytest.approx(101.5 + 98.25 + 2.5)
    assert times["cmnist"].job_seconds == pytest.approx(750.0)
    assert pv.read_benchmarks(FIXTURES / "no-such-folder") == []


def test_benchmark_repeats_are_averaged_and_bad_files_named(tmp_path: Path) -> None:
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    (tmp_path / "cmnist_train_erm.tsv").write_text(
        header
        + "10.0\t0:00:10\t100\t1\t1\t1\t0\t0\t1\t10\n20.0\t0:00:20\tNA\t1\t1\t1\t0\t0\t1\t20\n"
    )
    (record,) = pv.read_benchmarks(tmp_path)
    assert (record.study, record.job, record.seconds, record.max_rss_mb) == (
        "cmnist",
        "train_erm",
        15.0,
        100.0,
    )
    (tmp_path / "sem_bad.tsv").write_text("wall\n1\n")
    with pytest.raises(ValueError, match=r"sem_bad\.tsv"):
        pv.read_benchmarks(tmp_path)


def test_checksums_in_both_layouts(tmp_path: Path) -> None:
    rows = pv.read_checksums(FIXTURES / "data/mnist_checksums.json")
    assert [r["name"] for r in rows] == sorted(r["name"] for r in rows)
    assert len(rows) == 4 and all(len(r["sha256"]) == 64 for r in rows)
    assert rows[0]["source"].startswith("local folder")
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"b": "2" * 64, "a": "1" * 64}))
    assert pv.read_checksums(flat) == [
        {"name": "a", "sha256": "1" * 64, "source": ""},
        {"name": "b", "sha256": "2" * 64, "source": ""},
    ]
    assert pv.read_checksums(None) == []
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"files": [{"name": "a"}]}))
    with pytest.raises(ValueError, match=r"bad\.json"):
        pv.read_checksums(bad)


def test_versions_and_machine() -> None:
    versions = pv.package_versions(("pandas", "surely-not-installed-pkg"))
    assert versions["surely-not-installed-pkg"] == "not installed"
    assert versions["pandas"][0].isdigit()
    info = pv.machine()
    assert info["python"].count(".") == 2 and "cuda" in info
