"""Entry points of the unit-test study's Snakemake rules (importable, testable)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from irm_bench.io import write_csv
from irm_bench.unit_tests.aggregate import results_table, selection_table
from irm_bench.unit_tests.figures import plot_unit_tests
from irm_bench.unit_tests.protocol import UnitTestsConfig, run_job

log = logging.getLogger(__name__)


def train_task(
    section: Mapping[str, Any], task: str, output: str | Path, threads: int = 1
) -> None:
    """Run every configured method on ``task`` (one job per method, each batched over all
    trials and data seeds) and write the tidy run table to ``output``."""
    torch.set_num_threads(threads)
    # Saturated logits make exp() underflow to subnormals, which are slow on CPUs;
    # flushing them to zero changes no result here and saves ~25 % of the time.
    torch.set_flush_denormal(True)
    config = UnitTestsConfig.from_config(section)
    frames = []
    for method in config.methods:
        start = time.perf_counter()
        frames.append(run_job(config, task, method))
        log.info(
            "%s %s: %d models in %.1f s",
            task,
            method,
            config.n_trials * config.n_data_seeds,
            time.perf_counter() - start,
        )
    write_csv(pd.concat(frames, ignore_index=True), output)


def aggregate(
    run_paths: Sequence[str | Path],
    table_path: str | Path,
    figure_paths: Sequence[str | Path],
    selection_path: str | Path | None = None,
    rules: Sequence[str] = ("training_domain",),
) -> None:
    """Select trials, write the results table (and the method x rule selection table)
    and draw the figure."""
    runs = pd.concat([pd.read_csv(p) for p in run_paths], ignore_index=True)
    table = results_table(runs)
    write_csv(table, table_path)
    if selection_path is not None:
        write_csv(selection_table(runs, rules), selection_path)
    plot_unit_tests(table, figure_paths)
