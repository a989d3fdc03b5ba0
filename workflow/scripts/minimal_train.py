"""Train the appendix minimal example (rule minimal_train)."""

import logging

from irm_bench.appendix.minimal import run_minimal_to_files

logging.basicConfig(
    filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s"
)
logging.captureWarnings(True)
run_minimal_to_files(
    section=snakemake.params.minimal,
    trajectory_csv=snakemake.output.trajectory,
    final_json=snakemake.output.final,
    threads=snakemake.threads,
)
