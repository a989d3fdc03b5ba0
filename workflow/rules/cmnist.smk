# Rules of the Colored MNIST part (IRM paper, Section 5.2, Table 1 and a λ sweep):
# fetch MNIST -> one training job per method (IRMv1: all its λ in one job) -> tidy tables
# -> figures, and the model-selection table (cmnist_selection).

import re
from pathlib import Path

from snakemake.exceptions import WorkflowError

from irm_bench.cmnist.presets import build_plan

CMNIST = config["cmnist"]
CMNIST_DIR = f"{RESULTS}/cmnist"
# Threads of a training job: all of --cores. A cluster executor has no --cores; there
# the profile's set-threads gives them (profiles/slurm*), and this 1 is never used.
try:
    CMNIST_THREADS = workflow.cores
except WorkflowError:
    CMNIST_THREADS = 1

if CMNIST["enabled"]:
    CMNIST_PLAN = build_plan(CMNIST)
    CMNIST_JOBS = list(CMNIST_PLAN.jobs)
    CMNIST_TARGETS = [
        f"{RESULTS}/data/mnist_checksums.json",
        f"{CMNIST_DIR}/runs.csv",
        f"{CMNIST_DIR}/curves.csv",
        f"{RESULTS}/tables/cmnist_accuracy.csv",
        f"{RESULTS}/tables/cmnist_lambda_sweep.csv",
        *expand(
            f"{RESULTS}/figures/cmnist_{{fig}}.{{ext}}",
            fig=["lambda_sweep", "curves"],
            ext=["pdf", "png"],
        ),
    ]
    if CMNIST["selection"]["enabled"]:
        CMNIST_TARGETS.append(f"{RESULTS}/tables/cmnist_selection.csv")
else:
    CMNIST_PLAN = None
    CMNIST_JOBS = []
    CMNIST_TARGETS = []


rule cmnist_data:
    output:
        f"{RESULTS}/data/mnist_checksums.json",
    log:
        f"{LOGS}/cmnist_data.log",
    benchmark:
        f"{BENCH}/cmnist_data.tsv"
    conda:
        "../envs/irm-bench.yaml"
    threads: 1
    resources:
        runtime=30,
        mem_mb=1000,
    params:
        cache_dir=CMNIST["cache_dir"],
        # relative paths are taken from the folder holding the Snakefile
        local_source=(
            None
            if CMNIST["local_source"] is None
            else str(Path(workflow.basedir) / CMNIST["local_source"])
        ),
    script:
        "../scripts/cmnist_data.py"


rule cmnist_train:
    input:
        f"{RESULTS}/data/mnist_checksums.json",
    output:
        runs=f"{CMNIST_DIR}/jobs/{{job}}/runs.csv",
        curves=f"{CMNIST_DIR}/jobs/{{job}}/curves.csv",
    log:
        f"{LOGS}/cmnist_train_{{job}}.log",
    benchmark:
        f"{BENCH}/cmnist_train_{{job}}.tsv"
    wildcard_constraints:
        job="|".join(re.escape(j) for j in CMNIST_JOBS) or "no-cmnist-job",
    conda:
        "../envs/irm-bench.yaml"
    # A training job takes every core of the run (--cores N; torch intra-op threads,
    # capped at the machine's): its batched matmuls scale with threads, and the jobs
    # then run one after another instead of competing for the cores.
    threads: CMNIST_THREADS
    resources:
        runtime=lambda wc: CMNIST_PLAN.jobs[wc.job].cpu_minutes(),
        mem_mb=lambda wc: CMNIST_PLAN.jobs[wc.job].mem_mb(),
        gpu=TRAIN_GPUS,
    params:
        cmnist=CMNIST,
        device=config["device"],
    script:
        "../scripts/cmnist_train.py"


rule cmnist_collect:
    input:
        runs=expand(f"{CMNIST_DIR}/jobs/{{job}}/runs.csv", job=CMNIST_JOBS),
        curves=expand(f"{CMNIST_DIR}/jobs/{{job}}/curves.csv", job=CMNIST_JOBS),
    output:
        runs=f"{CMNIST_DIR}/runs.csv",
        curves=f"{CMNIST_DIR}/curves.csv",
    log:
        f"{LOGS}/cmnist_collect.log",
    conda:
        "../envs/irm-bench.yaml"
    threads: 1
    resources:
        runtime=5,
        mem_mb=2000,
    script:
        "../scripts/cmnist_collect.py"


rule cmnist_tables:
    input:
        runs=f"{CMNIST_DIR}/runs.csv",
    output:
        accuracy=report(
            f"{RESULTS}/tables/cmnist_accuracy.csv",
            caption="../report/cmnist_accuracy.rst",
            category="Colored MNIST",
        ),
        sweep=report(
            f"{RESULTS}/tables/cmnist_lambda_sweep.csv",
            caption="../report/cmnist_lambda_sweep_table.rst",
            category="Colored MNIST",
        ),
    log:
        f"{LOGS}/cmnist_tables.log",
    conda:
        "../envs/irm-bench.yaml"
    threads: 1
    resources:
        runtime=5,
        mem_mb=1000,
    script:
        "../scripts/cmnist_tables.py"


rule cmnist_figures:
    input:
        runs=f"{CMNIST_DIR}/runs.csv",
        curves=f"{CMNIST_DIR}/curves.csv",
        sweep=f"{RESULTS}/tables/cmnist_lambda_sweep.csv",
    output:
        sweep_pdf=f"{RESULTS}/figures/cmnist_lambda_sweep.pdf",
        sweep_png=report(
            f"{RESULTS}/figures/cmnist_lambda_sweep.png",
            caption="../report/cmnist_lambda_sweep.rst",
            category="Colored MNIST",
        ),
        curves_pdf=f"{RESULTS}/figures/cmnist_curves.pdf",
        curves_png=report(
            f"{RESULTS}/figures/cmnist_curves.png",
            caption="../report/cmnist_curves.rst",
            category="Colored MNIST",
        ),
    log:
        f"{LOGS}/cmnist_figures.log",
    conda:
        "../envs/irm-bench.yaml"
    threads: 1
    resources:
        runtime=5,
        mem_mb=2000,
    script:
        "../scripts/cmnist_figures.py"


rule cmnist_selection:
    input:
        runs=f"{CMNIST_DIR}/runs.csv",
        curves=f"{CMNIST_DIR}/curves.csv",
    output:
        records=f"{RESULTS}/tables/cmnist_selection_records.csv",
        selection=report(
            f"{RESULTS}/tables/cmnist_selection.csv",
            caption="../report/cmnist_selection.rst",
            category="Colored MNIST",
        ),
    log:
        f"{LOGS}/cmnist_selection.log",
    conda:
        "../envs/irm-bench.yaml"
    threads: 1
    resources:
        runtime=5,
        mem_mb=2000,
    params:
        cmnist=CMNIST,
    script:
        "../scripts/cmnist_selection.py"
