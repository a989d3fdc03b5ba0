"""Fit every SEM method on one block of draws, both protocols (rule sem_fit)."""

import logging

from irm_bench.sem.study import run_sem_job_to_files

logging.basicConfig(
    filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s"
)
logging.captureWarnings(True)
run_sem_job_to_files(
    section=snakemake.params.sem,
    device=snakemake.params.device,
    setup=snakemake.wildcards.setup,
    chunk=int(snakemake.wildcards.chunk),
    draws_csv=snakemake.output.draws,
    coefficients_csv=snakemake.output.coefficients,
    holdout_csv=snakemake.output.holdout,
    info_json=snakemake.output.info,
    threads=snakemake.threads,
)
