"""Train one Colored MNIST job: a method (IRMv1: every λ), all restarts (rule cmnist_train)."""

import contextlib

from irm_bench.cmnist.pipeline import train_job_from_config

with open(snakemake.log[0], "w") as log, contextlib.redirect_stderr(log):
    train_job_from_config(
        snakemake.params.cmnist,
        snakemake.wildcards.job,
        device=snakemake.params.device,
        threads=snakemake.threads,
        runs_path=snakemake.output.runs,
        curves_path=snakemake.output.curves,
        progress=log,
    )
