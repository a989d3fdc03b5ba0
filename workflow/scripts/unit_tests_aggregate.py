"""Model selection, results table and figure of the unit-test study."""

import logging

from irm_bench.unit_tests.pipeline import aggregate

logging.basicConfig(
    filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s"
)
logging.captureWarnings(True)
aggregate(
    list(snakemake.input.runs),
    snakemake.output.table,
    [snakemake.output.png, snakemake.output.pdf],
    selection_path=snakemake.output.selection,
    rules=snakemake.params.rules,
)
