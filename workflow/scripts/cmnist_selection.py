"""Model selection of Colored MNIST: sweep records and the method x rule table
(rule cmnist_selection)."""

import contextlib

from irm_bench.cmnist.selection import selection_step

with open(snakemake.log[0], "w") as log, contextlib.redirect_stderr(log):
    selection_step(
        snakemake.input.curves,
        snakemake.input.runs,
        snakemake.params.cmnist,
        records_out=snakemake.output.records,
        table_out=snakemake.output.selection,
    )
