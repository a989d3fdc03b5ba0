"""Plot the appendix minimal example's trajectory (rule minimal_figure)."""

import logging

from irm_bench.appendix.minimal import plot_trajectory_file

logging.basicConfig(
    filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s"
)
logging.captureWarnings(True)
plot_trajectory_file(snakemake.input.trajectory, [snakemake.output.png, snakemake.output.pdf])
