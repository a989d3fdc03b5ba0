"""The report in the DAG: planned by a dry run, rebuilt when a table changes, and
Snakemake's own ``--report`` works after a run (fixture tables stand in for the studies)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "run"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
REPORT_RULES = ["report", "report_motivating"]

pytestmark = pytest.mark.slow


def smk(args: list[str], config: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(REPO)]
    cmd += ["--configfile", str(config), "--cores", "1", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("wf")
    results = tmp / "results"
    shutil.copytree(FIXTURES, results)
    (results / "tables/motivating.csv").unlink()  # made by the report_motivating rule
    config = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    config["results_dir"] = str(results)
    config["cmnist"]["local_source"] = None
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    targets = [str(results / "report/report.html"), str(results / "report/report.pdf")]
    return {"tmp": tmp, "results": results, "config": path, "targets": targets}


def planned_jobs(stdout: str) -> set[str]:
    """Rule names of the jobs a dry run lists (lines ``rule NAME:``)."""
    return {
        line.split()[1].rstrip(":") for line in stdout.splitlines() if line.startswith("rule ")
    }


def test_dry_run_of_the_default_target_plans_the_report(run_dir: dict) -> None:
    out = smk(["-n"], run_dir["config"])
    assert out.returncode == 0, out.stderr + out.stdout
    assert {"report", "report_motivating"} <= planned_jobs(out.stdout + out.stderr)


def test_report_disabled_drops_the_target(run_dir: dict) -> None:
    config = yaml.safe_load(run_dir["config"].read_text())
    config["report"]["enabled"] = False
    path = run_dir["tmp"] / "no_report.yaml"
    path.write_text(yaml.safe_dump(config))
    out = smk(["-n"], path)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "report" not in planned_jobs(out.stdout + out.stderr)


def test_run_then_rebuild_when_a_table_changes_then_snakemake_report(run_dir: dict) -> None:
    only = [*run_dir["targets"], "--allowed-rules", *REPORT_RULES]
    out = smk(only, run_dir["config"])
    assert out.returncode == 0, out.stderr + out.stdout
    results = run_dir["results"]
    for name in ("report/report.html", "report/report.pdf", "tables/motivating.csv"):
        assert (results / name).stat().st_size > 0, name
    assert (results / "figures/motivating.pdf").exists()

    out = smk(["-n", *only], run_dir["config"])
    assert "report" not in planned_jobs(out.stdout + out.stderr), out.stdout

    # Change one number of one table (Snakemake 9 ignores a bare touch when the file's
    # checksum is unchanged, so the content must really change).
    time.sleep(1.1)  # a newer mtime than the report's, on coarse-grained filesystems
    table = results / "tables/cmnist_accuracy.csv"
    table.write_text(table.read_text().replace("0.7348", "0.7349"))
    out = smk(["-n", *only], run_dir["config"])
    text = out.stdout + out.stderr
    assert planned_jobs(text) == {"report"}, text
    assert "cmnist_accuracy.csv" in text  # the reason: updated input

    zipped = run_dir["tmp"] / "snakemake_report.zip"
    out = smk(["--report", str(zipped), *only], run_dir["config"])
    assert out.returncode == 0, out.stderr + out.stdout
    with zipfile.ZipFile(zipped) as zf:
        names = zf.namelist()
    assert any(n.endswith("report.html") for n in names), names
    assert any(n.endswith("motivating.png") for n in names), names
