"""Interrupted runs resume to identical results (issue: reliability, item 3).

One uninterrupted smoke run is the reference. A second run of the same config is
killed while a chosen job is running (Ctrl-C or SIGKILL of the whole process group,
as a power loss would), then restarted with the documented command
(``python -m irm_bench.locks`` clears a stale lock, then the same ``snakemake``
call; the default profile has ``rerun-incomplete``), several times at different
stages. When it finally completes, every result table must be byte-identical to
the reference's, and outputs finished before the last interruption must not have
been recomputed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml
from result_files import comparable_bytes

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 900

# (target under results_dir or None for the default target, rule and script of the
# job that is killed, signal): a data fetch, training, aggregation, the report. Each run asks for
# a target that needs the stage to be killed, so the stage is still to do whatever
# order Snakemake picks for independent jobs.
KILL_POINTS = [
    ("data/mnist_checksums.json", "cmnist_data", "cmnist_data.py", signal.SIGKILL),
    ("tables/sem_errors.csv", "sem_fit", "sem_fit.py", signal.SIGINT),
    ("tables/cmnist_accuracy.csv", "cmnist_train", "cmnist_train.py", signal.SIGKILL),
    ("tables/sem_errors.csv", "sem_aggregate", "sem_aggregate.py", signal.SIGINT),
    (None, "report", "report_build.py", signal.SIGKILL),
]


def _config(tmp_path: Path, name: str, mnist_source: Path) -> Path:
    with open(REPO / "config" / "smoke.yaml") as fh:
        cfg = yaml.safe_load(fh)
    cfg["results_dir"] = str(tmp_path / name)
    cfg["cmnist"]["cache_dir"] = str(tmp_path / name / "mnist-cache")
    cfg["cmnist"]["local_source"] = str(mnist_source)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cmd(configfile: Path, target: Path | None = None) -> list[str]:
    targets = [] if target is None else [str(target)]
    return [
        sys.executable, "-m", "snakemake", "--cores", "2", *targets,
        "--configfile", str(configfile),
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _run_to_end(configfile: Path) -> str:
    subprocess.run([sys.executable, "-m", "irm_bench.locks"], cwd=REPO, env=_env(), check=True)
    proc = subprocess.run(
        _cmd(configfile),
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stderr


def _script_running(root: psutil.Process, script: str) -> bool:
    try:
        children = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return False
    for child in children:
        try:
            if any(part.endswith(script) for part in child.cmdline()):
                return True
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return False


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run_and_kill(
    configfile: Path, target: Path | None, rule: str, script: str, sig: signal.Signals, log: Path
) -> bool:
    """Start the run; once Snakemake announces a ``rule`` job and its ``script`` process
    runs, send ``sig``. Returns whether the job was caught running."""
    subprocess.run([sys.executable, "-m", "irm_bench.locks"], cwd=REPO, env=_env(), check=True)
    announced = re.compile(rf"^(local)?rule {re.escape(rule)}:", re.MULTILINE)
    with open(log, "w") as out:
        proc = subprocess.Popen(
            _cmd(configfile, target),
            cwd=REPO,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # A shell's background job inherits SIGINT ignored (CI may run us so); a
            # terminal's Ctrl-C reaches a Snakemake with the default handler.
            preexec_fn=_default_sigint,
        )
    root = psutil.Process(proc.pid)
    caught = False
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        if announced.search(log.read_text()) and _script_running(root, script):
            caught = True
            time.sleep(0.2)  # let the job get into its work
            if sig == signal.SIGKILL:
                os.killpg(proc.pid, signal.SIGKILL)  # the whole run dies at once
            else:
                proc.send_signal(sig)  # Ctrl-C reaches the controller
            break
        time.sleep(0.02)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if sig != signal.SIGKILL:
        # Jobs of a Ctrl-C'd controller must not outlive it.
        time.sleep(1)
    return caught


def _results(results: Path) -> dict[str, bytes]:
    """Every result table and per-job file that must be reproducible exactly.

    Logs, benchmarks (timings), JSON info files (timings, provenance) and the report
    (times, git state) are excluded; the report's numbers come from these tables.
    A table's timing columns are dropped; every other byte must repeat.
    """
    files = {}
    for path in sorted(results.rglob("*.csv")):
        rel = path.relative_to(results)
        if rel.parts[0] in {"logs", "benchmarks", "mnist-cache"} or path.name.startswith("."):
            continue
        files[str(rel)] = comparable_bytes(path)
    return files


def test_killed_runs_resume_to_identical_results(tmp_path, mnist_source):
    reference = _config(tmp_path, "reference", mnist_source)
    _run_to_end(reference)
    expected = _results(tmp_path / "reference")
    assert any(k.startswith("tables/sem_errors") for k in expected)
    assert any(k.startswith("tables/cmnist_accuracy") for k in expected)

    interrupted = _config(tmp_path, "interrupted", mnist_source)
    results = tmp_path / "interrupted"
    caught, logs = [], []
    for n, (target, rule, script, sig) in enumerate(KILL_POINTS):
        logs.append(tmp_path / f"interrupted_run{n}.log")
        if _run_and_kill(interrupted, target and results / target, rule, script, sig, logs[-1]):
            caught.append(rule)
        # Whatever a killed run left behind is whole: every table present parses.
        for path in results.rglob("*.csv"):
            if not path.name.startswith("."):  # a SIGKILL'd writer's temp file
                pd.read_csv(path)
    wanted = [rule for _, rule, _, _ in KILL_POINTS]
    missed = [logs[i] for i, rule in enumerate(wanted) if rule not in caught]
    assert caught == wanted, "\n".join(
        [str(caught)] + [f"--- {log}:\n{log.read_text()[-3000:]}" for log in missed]
    )

    finished_before = {
        p: p.stat().st_mtime_ns for p in (results / "sem").rglob("*.csv") if p.is_file()
    }
    log = _run_to_end(interrupted)
    assert "report" in log
    for path, mtime in finished_before.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was recomputed"

    got = _results(results)
    assert sorted(got) == sorted(expected)
    different = [name for name in expected if got[name] != expected[name]]
    assert not different, f"results differ after interruption: {different}"
