"""Train every unit-test method on one task (rule unit_tests_train)."""

import logging

from irm_bench.unit_tests.pipeline import train_task

logging.basicConfig(
    filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s"
)
logging.captureWarnings(True)
train_task(
    dict(snakemake.params.section),
    snakemake.wildcards.ut_task,
    snakemake.output.runs,
    threads=snakemake.threads,
)
