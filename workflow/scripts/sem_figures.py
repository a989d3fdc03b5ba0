"""Draw Figure 4 and the IRMv1 lambda sweep (rule sem_figures)."""

import logging

from irm_bench.sem.figures import make_sem_figures

logging.basicConfig(
    filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s"
)
logging.captureWarnings(True)
make_sem_figures(
    draws_csv=snakemake.input.draws,
    errors_paths=[snakemake.output.errors_png, snakemake.output.errors_pdf],
    sweep_paths=[snakemake.output.sweep_png, snakemake.output.sweep_pdf],
)
