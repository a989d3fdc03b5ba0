"""Snakemake entry: the paper-style report (HTML and PDF) from every study's tables."""

import logging

from irm_bench.report import TABLE_INPUTS, build_report

logging.basicConfig(
    filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s"
)
inputs = dict(snakemake.input.items())
build_report(
    tables={name: inputs[name] for name in TABLE_INPUTS if name in inputs},
    config=snakemake.params.config,
    repo=snakemake.params.repo,
    benchmark_dir=snakemake.params.benchmarks,
    html_path=snakemake.output.html,
    pdf_path=snakemake.output.pdf,
    mnist_checksums=inputs.get("mnist_checksums"),
)
