"""Fetch and verify the MNIST IDX files; write their names and SHA-256 (rule cmnist_data)."""

import contextlib

from irm_bench.cmnist.pipeline import fetch_step

with open(snakemake.log[0], "w") as log, contextlib.redirect_stderr(log):
    fetch_step(
        cache_dir=snakemake.params.cache_dir,
        local_source=snakemake.params.local_source,
        checksums_path=snakemake.output[0],
    )
