"""Table 1 and the λ-sweep table from runs.csv (rule cmnist_tables)."""

import contextlib

from irm_bench.cmnist.pipeline import summarise

with open(snakemake.log[0], "w") as log, contextlib.redirect_stderr(log):
    summarise(
        snakemake.input.runs,
        accuracy_out=snakemake.output.accuracy,
        sweep_out=snakemake.output.sweep,
    )
