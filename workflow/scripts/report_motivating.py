"""Snakemake entry: the paper's motivating example (Example 1, Section 2) (table and figure)."""

import logging

from irm_bench.report import build_motivating

logging.basicConfig(
    filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s"
)
build_motivating(
    table_path=snakemake.output.table,
    figure_paths=[snakemake.output.png, snakemake.output.pdf],
)
