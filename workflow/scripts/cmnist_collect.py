"""Concatenate the per-job tables into runs.csv and curves.csv (rule cmnist_collect)."""

import contextlib

from irm_bench.cmnist.pipeline import collect

with open(snakemake.log[0], "w") as log, contextlib.redirect_stderr(log):
    collect(
        snakemake.input.runs,
        snakemake.input.curves,
        runs_out=snakemake.output.runs,
        curves_out=snakemake.output.curves,
    )
