"""Cluster execution through snakemake-executor-plugin-slurm.

* ``test_workflow_through_local_slurm`` starts a real single-node SLURM
  (tests/slurm_cluster.py), runs a workflow with ``--profile profiles/slurm-local``,
  checks that every job went through ``sbatch`` (job ids in Snakemake's log, in
  slurmctld's log and in ``scontrol``), that GPU rules got a GPU and the GPU partition
  while other rules did not, and that the results are byte-identical to a local run.
* ``test_slurm_profile_submissions`` runs the cluster template ``profiles/slurm``
  against stand-in SLURM commands that record each ``sbatch`` call, and checks the
  submitted account, partition, wall time, memory, CPUs and GPUs.

The SLURM tests are marked ``slurm``. Without ``slurm-wlm``/``munge``, root, or the
plugin they are skipped locally; under CI (``CI`` set) they fail instead, since
``.ci/run`` installs everything.

To run the project's own pipeline through the local SLURM, add a case to ``CASES``
(see the commented ``smoke`` line there).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from slurm_cluster import LocalSlurm, SlurmHarnessError, missing_programs
from snakemake_cli import REPO, TOY_SNAKEFILE, run_snakemake, with_config

pytestmark = pytest.mark.slurm

TOY = TOY_SNAKEFILE
# Partitions of tests/slurm_cluster.py, mirrored by profiles/slurm-local/partitions.yaml.
CPU_PARTITION, GPU_PARTITION = "cpu", "gpu"


@dataclass(frozen=True)
class WorkflowCase:
    """A workflow run once locally and once through the local SLURM.

    Attributes
    ----------
    name
        Test id.
    snakefile
        The workflow's Snakefile.
    args
        Extra snakemake arguments for both runs (e.g. ``--configfile``). Both runs add
        ``--config results_dir=<tmp>/results gpu_jobs=True``; the local run's results
        are moved aside before the SLURM run, so both runs see the same config (and
        config hashes in provenance agree).
    workdir
        Folder to run in (relative paths of ``args`` and of the config resolve there);
        ``None``: a fresh temporary folder.
    gpu_rules
        Rules whose jobs must ask SLURM for one GPU (all others must ask for none).
    compare
        Globs, relative to the results folder, of files that must be byte-identical
        between the two runs (at least one file must match).
    probe_env
        The rules' log files are JSON recording ``SLURM_JOB_ID``, the partition and
        ``CUDA_VISIBLE_DEVICES`` (the toy workflow's do).
    """

    name: str
    snakefile: Path
    gpu_rules: frozenset[str]
    args: tuple[str, ...] = ()
    workdir: Path | None = None
    compare: tuple[str, ...] = ("**/*.csv", "**/*.json")
    probe_env: bool = False


CASES = [
    WorkflowCase("toy", TOY, frozenset({"train"}), ("--config", "n_shards=2"), probe_env=True),
    # The project's smoke pipeline (uncomment once its rules are merged; list the
    # training rules and compare the result tables):
    # WorkflowCase("smoke", REPO / "Snakefile", frozenset({"sem_fit", "cmnist_train"}),
    #              ("--configfile", "config/smoke.yaml"), REPO, ("**/*.csv",)),
]


def _need(condition: bool, why: str) -> None:
    """Skip when a prerequisite is missing, but fail under CI, which installs it."""
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"{why} (CI installs it: see .ci/run)")
        pytest.skip(why)


def _plugin_installed() -> bool:
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return False
    return True


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def local_slurm(tmp_path_factory):
    """A running single-node SLURM for the session; always stopped afterwards."""
    missing = missing_programs()
    _need(not missing, f"SLURM not installed (missing {', '.join(missing)})")
    _need(os.geteuid() == 0, "the local SLURM needs root")
    _need(_plugin_installed(), "snakemake-executor-plugin-slurm is not installed")
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm_state"), n_gpus=2)
    # A CI timeout sends SIGTERM: turn it into KeyboardInterrupt so teardown still runs.
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        cluster.start()
    except SlurmHarnessError as err:
        signal.signal(signal.SIGTERM, previous)
        pytest.fail(f"local SLURM did not start: {err}")
    try:
        yield cluster
    finally:
        cluster.stop()
        signal.signal(signal.SIGTERM, previous)


def _scontrol_job(job_id: str) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "show", "job", "--oneliner", job_id],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(tok.split("=", 1) for tok in out.split() if "=" in tok)


def _identical_results(local: Path, slurm: Path, globs: tuple[str, ...]) -> list[str]:
    """Relative paths compared; asserts equal file sets and equal bytes."""
    compared = []
    for pattern in globs:
        mine = sorted(p.relative_to(local) for p in local.glob(pattern) if p.is_file())
        theirs = sorted(p.relative_to(slurm) for p in slurm.glob(pattern) if p.is_file())
        mine = [p for p in mine if p.parts[0] not in {"logs", "benchmarks"}]
        theirs = [p for p in theirs if p.parts[0] not in {"logs", "benchmarks"}]
        assert mine == theirs, f"{pattern}: different files: {mine} vs {theirs}"
        for rel in mine:
            assert (local / rel).read_bytes() == (slurm / rel).read_bytes(), f"{rel} differs"
            compared.append(str(rel))
    assert compared, f"no result files match {globs}"
    return compared


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_workflow_through_local_slurm(case: WorkflowCase, local_slurm, tmp_path):
    workdir = case.workdir or tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    base = ["--snakefile", str(case.snakefile)]
    results = tmp_path / "results"

    local = run_snakemake(
        [
            *base,
            "--cores",
            "2",
            *with_config(case.args, results_dir=results, gpu_jobs=True),
        ],
        workdir,
    )
    assert local.returncode == 0, local.stdout[-5000:]
    local_results = results.rename(tmp_path / "local")

    slurm_logs = tmp_path / "slurm_logs"
    run = run_snakemake(
        [
            *base,
            "--profile",
            str(REPO / "profiles" / "slurm-local"),
            "--workflow-profile",
            "none",
            "--slurm-logdir",
            str(slurm_logs),
            *with_config(case.args, results_dir=results, gpu_jobs=True),
        ],
        workdir,
    )
    assert run.returncode == 0, run.stdout[-8000:]

    # Every job Snakemake did not run itself ("localrule") went through sbatch.
    jobs = re.findall(
        r"^(localrule|rule) (\w+):\n(?:    .*\n)*?    jobid: (\d+)$", run.stdout, re.MULTILINE
    )
    remote = {jid: rule for kind, rule, jid in jobs if kind == "rule"}
    submitted = dict(
        re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", run.stdout)
    )
    finished = set(re.findall(r"Finished jobid: (\d+) ", run.stdout))
    assert remote, "no jobs were submitted"
    assert set(remote) == set(submitted), "jobs ran without sbatch"
    assert {jid for _, _, jid in jobs} == finished
    ctld_log = local_slurm.ctld_log.read_text()
    for jid, rule in remote.items():
        slurm_id = submitted[jid]
        assert re.search(rf"_slurm_rpc_submit_batch_job: JobId={slurm_id}\b", ctld_log)
        info = _scontrol_job(slurm_id)
        assert info["JobState"] == "COMPLETED", (rule, info["JobState"])
        assert info["ExitCode"] == "0:0"
        assert info["Comment"].startswith(f"rule_{rule}")
        wants_gpu = rule in case.gpu_rules
        assert ("gres:gpu:1" in info.get("TresPerJob", "")) is wants_gpu, (rule, info)
        assert info["Partition"] == (GPU_PARTITION if wants_gpu else CPU_PARTITION), info
        assert list(slurm_logs.glob(f"rule_{rule}/**/{slurm_id}.log")), f"no SLURM log {slurm_id}"
    assert set(remote.values()) >= case.gpu_rules

    if case.probe_env:
        by_slurm_id = {submitted[jid]: rule for jid, rule in remote.items()}
        for log in (results / "logs").rglob("*.log"):
            ctx = json.loads(log.read_text())
            rule = by_slurm_id[ctx["SLURM_JOB_ID"]]  # KeyError: ran outside our jobs
            assert log.parent.name == rule or log.stem == rule
            assert bool(ctx["CUDA_VISIBLE_DEVICES"]) is (rule in case.gpu_rules), ctx
        for log in (local_results / "logs").rglob("*.log"):
            assert json.loads(log.read_text())["SLURM_JOB_ID"] == ""

    _identical_results(local_results, results, case.compare)


FAKE_SBATCH = """\
#!{python}
# Stand-in sbatch: record the arguments, then refuse the job.
import json, os, sys
with open(os.environ["FAKE_SBATCH_RECORD"], "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
sys.stderr.write("sbatch: error: stand-in sbatch only records its arguments\\n")
sys.exit(1)
"""
FAKE_TOOLS = {
    # Account validation lists the user's accounts.
    "sacctmgr": 'echo "$FAKE_SLURM_ACCOUNT"',
    "sshare": 'echo "$FAKE_SLURM_ACCOUNT"',
    "scontrol": 'echo "MaxArraySize = 1001"; echo "MinJobAge = 300"',
    **{name: "exit 0" for name in ("sacct", "squeue", "sinfo", "scancel", "srun")},
}


def _sbatch_options(argv: list[str]) -> dict[str, str]:
    """Parse a recorded sbatch call into {option: value}; flags map to ''."""
    opts: dict[str, str] = {}
    it = iter(argv)
    for tok in it:
        if tok.startswith("--wrap="):
            opts["--wrap"] = tok.removeprefix("--wrap=")
            break
        if "=" in tok and tok.startswith("--"):
            key, val = tok.split("=", 1)
            opts[key] = val
        elif tok in {"--parsable", "--export=ALL"}:
            opts[tok] = ""
        else:
            opts[tok] = next(it)
    return opts


@pytest.mark.parametrize("gpu_jobs", [True, False], ids=["gpu_jobs", "cpu_only"])
def test_slurm_profile_submissions(gpu_jobs: bool, tmp_path):
    _need(_plugin_installed(), "snakemake-executor-plugin-slurm is not installed")
    profile = REPO / "profiles" / "slurm"
    settings = yaml.safe_load((profile / "config.yaml").read_text())
    account = settings["default-resources"]["slurm_account"]
    partitions = yaml.safe_load((profile / "partitions.yaml").read_text())["partitions"]
    gpu_parts = {name for name, lim in partitions.items() if lim.get("max_gpu", 0) > 0}
    cpu_parts = set(partitions) - gpu_parts
    assert gpu_parts and cpu_parts, "the template should show one CPU and one GPU partition"

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "sbatch").write_text(FAKE_SBATCH.format(python=sys.executable))
    for name, body in FAKE_TOOLS.items():
        (fake_bin / name).write_text(f"#!/bin/sh\n{body}\n")
    for tool in fake_bin.iterdir():
        tool.chmod(0o755)
    record = tmp_path / "sbatch_calls.jsonl"
    env = {
        "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}",
        "FAKE_SBATCH_RECORD": str(record),
        "FAKE_SLURM_ACCOUNT": account,
    }
    results = tmp_path / "results"
    config = with_config((), results_dir=results, gpu_jobs=gpu_jobs)
    # Make shard 0's data locally, so that a CPU job (simulate, shard 1) and a GPU job
    # (train, shard 0) are both ready to be submitted at once.
    pre = run_snakemake(
        ["-s", str(TOY), str(results / "data" / "shard0.json"), "--cores", "1", *config],
        tmp_path,
    )
    assert pre.returncode == 0, pre.stdout[-3000:]

    run = run_snakemake(
        [
            "-s",
            str(TOY),
            "--profile",
            str(profile),
            "--workflow-profile",
            "none",
            # Only so that the run ends soon after the refused submissions.
            "--slurm-init-seconds-before-status-checks",
            "1",
            *config,
        ],
        tmp_path,
        env,
    )
    assert run.returncode != 0, "the stand-in sbatch refuses every job"
    assert "stand-in sbatch only records" in run.stdout, run.stdout[-5000:]
    calls = [_sbatch_options(json.loads(line)) for line in record.read_text().splitlines()]
    by_rule = {}
    for opts in calls:
        by_rule.setdefault(opts["--comment"].split("_wildcards_")[0], []).append(opts)
    assert set(by_rule) == {"rule_train", "rule_simulate"}, list(by_rule)
    # Each job is tried 1 + retries times, with the same request each time.
    for tries in by_rule.values():
        assert len(tries) == 1 + settings["retries"]
        requests = [{k: v for k, v in t.items() if k != "--wrap"} for t in tries]
        assert all(r == requests[0] for r in requests)

    train, simulate = by_rule["rule_train"][0], by_rule["rule_simulate"][0]
    # The template's own settings reach the jobs (profiles/default stays out).
    assert f"--latency-wait {settings['latency-wait']} " in train["--wrap"]
    # Values from the toy Snakefile's rules and the template profile.
    assert (train["-t"], train["--mem"], train["--cpus-per-task"]) == ("5", "300", "2")
    assert (simulate["-t"], simulate["--mem"], simulate["--cpus-per-task"]) == ("2", "200", "1")
    assert train["-A"] == simulate["-A"] == account
    assert "--gpus" not in simulate
    assert simulate["-p"] in cpu_parts
    if gpu_jobs:
        assert train["--gpus"] == "1"
        assert train["-p"] in gpu_parts
    else:
        assert "--gpus" not in train
        assert train["-p"] in cpu_parts
