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
from result_files import comparable_bytes, first_difference
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
        Extra snakemake arguments for both runs (``--configfile``, ``--groups``...).
        Both runs add ``--config results_dir=<tmp>/results gpu_jobs=True``; the local
        run's results are moved aside before the SLURM run, so both runs see the same
        config (and config hashes in provenance agree).
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
    # simulate jobs run as one group job (one sbatch for both shards), the rest alone.
    WorkflowCase(
        "toy",
        TOY,
        frozenset({"train"}),
        ("--groups", "simulate=data", "--group-components", "data=2", "--config", "n_shards=2"),
        probe_env=True,
    ),
    # The project's smoke pipeline: every branch (SEM, appendix, Colored MNIST, report);
    # the training rules ask for a GPU. Result tables must match the local run's.
    WorkflowCase(
        "smoke",
        REPO / "Snakefile",
        frozenset({"sem_fit", "minimal_train", "cmnist_train"}),
        ("--configfile", str(REPO / "config" / "smoke.yaml")),
        compare=("tables/*.csv", "sem/**/*.csv", "cmnist/*.csv", "minimal/*.csv"),
    ),
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


# A job as Snakemake prints it: "rule NAME:" or "localrule NAME:" (indented inside a
# group job), then indented "key: value" lines, among them "output: a, b".
_JOB_BLOCK = re.compile(
    r"^[ \t]*(localrule|rule) (\w+):\n((?:[ \t]+[a-z][\w-]*: .*\n)*)", re.MULTILINE
)


def _job_blocks(text: str) -> list[tuple[str, str, frozenset[str]]]:
    """(kind, rule, output files) of every job in a Snakemake log."""
    blocks = []
    for kind, rule, body in _JOB_BLOCK.findall(text):
        outs = re.search(r"^[ \t]+output: (.*)$", body, re.MULTILINE)
        blocks.append((kind, rule, frozenset(outs.group(1).split(", ")) if outs else frozenset()))
    return blocks


def _identical_results(local: Path, slurm: Path, globs: tuple[str, ...]) -> list[str]:
    """Relative paths compared; asserts equal file sets and equal bytes."""
    compared, differ = [], []
    for pattern in globs:
        mine = sorted(p.relative_to(local) for p in local.glob(pattern) if p.is_file())
        theirs = sorted(p.relative_to(slurm) for p in slurm.glob(pattern) if p.is_file())
        mine = [p for p in mine if p.parts[0] not in {"logs", "benchmarks"}]
        theirs = [p for p in theirs if p.parts[0] not in {"logs", "benchmarks"}]
        assert mine == theirs, f"{pattern}: different files: {mine} vs {theirs}"
        for rel in mine:
            ours, other = comparable_bytes(local / rel), comparable_bytes(slurm / rel)
            if ours != other:
                differ.append(f"{rel}: {first_difference(ours, other)}")
            compared.append(str(rel))
    assert not differ, "results differ between the local and the SLURM run:\n" + "\n".join(differ)
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

    # Every job Snakemake did not run itself ("localrule") ran inside a SLURM job: its
    # outputs appear in the log of a job that sbatch accepted, slurmctld logged, and
    # scontrol reports as completed. Group jobs hold several rules.
    remote = [(rule, outs) for kind, rule, outs in _job_blocks(run.stdout) if kind == "rule"]
    slurm_ids = re.findall(r"has been submitted with SLURM jobid (\d+) ", run.stdout)
    assert remote, "no jobs were submitted"
    assert len(set(slurm_ids)) == len(slurm_ids) >= 1
    ctld_log = local_slurm.ctld_log.read_text()
    ran_in: dict[str, str] = {}  # output file -> SLURM job id
    rules_in: dict[str, set[str]] = {}  # SLURM job id -> rules it ran
    for slurm_id in slurm_ids:
        assert re.search(rf"_slurm_rpc_submit_batch_job: JobId={slurm_id}\b", ctld_log)
        info = _scontrol_job(slurm_id)
        assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), info
        (job_log,) = slurm_logs.glob(f"**/{slurm_id}.log")
        inner = _job_blocks(job_log.read_text())
        rules_in[slurm_id] = {rule for _, rule, _ in inner}
        ran_in.update({path: slurm_id for _, _, outs in inner for path in outs})
        wants_gpu = bool(rules_in[slurm_id] & case.gpu_rules)
        assert ("gres:gpu:1" in info.get("TresPerJob", "")) is wants_gpu, info
        assert info["Partition"] == (GPU_PARTITION if wants_gpu else CPU_PARTITION), info
    for rule, outs in remote:
        assert outs, f"{rule}: no outputs in Snakemake's log"
        assert all(path in ran_in for path in outs), f"{rule} {sorted(outs)} ran outside SLURM"
    assert {rule for rule, _ in remote} >= case.gpu_rules

    if case.probe_env:
        for log in (results / "logs").rglob("*.log"):
            ctx = json.loads(log.read_text())
            rule = log.parent.name if log.parent.name != "logs" else log.stem
            assert rule in rules_in.get(ctx["SLURM_JOB_ID"], set()), (log, ctx)
            on_gpu = bool(rules_in[ctx["SLURM_JOB_ID"]] & case.gpu_rules)
            assert bool(ctx["CUDA_VISIBLE_DEVICES"]) is on_gpu, ctx
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
