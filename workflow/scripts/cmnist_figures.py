"""λ-sweep and training-curve figures (rule cmnist_figures)."""

import contextlib

from irm_bench.cmnist.figures import plot_curves, plot_lambda_sweep

with open(snakemake.log[0], "w") as log, contextlib.redirect_stderr(log):
    plot_lambda_sweep(
        snakemake.input.sweep,
        snakemake.input.runs,
        [snakemake.output.sweep_pdf, snakemake.output.sweep_png],
    )
    plot_curves(snakemake.input.curves, [snakemake.output.curves_pdf, snakemake.output.curves_png])
