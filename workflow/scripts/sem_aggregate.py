"""Combine the SEM jobs into the study tables (rule sem_aggregate)."""

import logging

from irm_bench.sem.aggregate import aggregate_sem_files

logging.basicConfig(
    filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s"
)
logging.captureWarnings(True)
aggregate_sem_files(
    draw_paths=list(snakemake.input.draws),
    coefficient_paths=list(snakemake.input.coefficients),
    methods_order=snakemake.params.methods,
    holdout_paths=list(snakemake.input.holdout),
    rules=snakemake.params.rules,
    outputs=dict(snakemake.output.items()),
)
