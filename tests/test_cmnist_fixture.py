"""The Colored MNIST trainer keeps the numbers it gave before the method contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from fixtures.make_cmnist_fixture import CONFIG, KEYS, OUT, VALUES, run_smoke_real

from irm_bench.cmnist.pipeline import fetch_step, train_job
from irm_bench.cmnist.presets import build_plan


def test_smoke_on_real_mnist_reproduces_recorded_numbers(mnist_source, tmp_path: Path):
    """Every smoke job (ERM, IRMv1 at two λ, oracle; real MNIST) as recorded at c98cfd6."""
    before = pd.read_csv(OUT)
    now = run_smoke_real(mnist_source, tmp_path)[KEYS + VALUES]
    order = ["method", "study", "lambda", "restart"]
    before = before.sort_values(order).reset_index(drop=True)
    now = now.sort_values(order).reset_index(drop=True)
    assert len(now) == len(before)
    for col in KEYS:
        if before[col].dtype.kind == "f":
            np.testing.assert_allclose(now[col], before[col], rtol=1e-12)
        else:
            assert now[col].tolist() == before[col].tolist(), col
    # atol 1e-5: float32 sums of 1/n weights round by up to ~4e-6 depending on the
    # batch a model is stacked in (IRMv1's λ are one fork now); one example of the
    # 10,000 test images changes an accuracy by 1e-4, so a real change still fails.
    for col in VALUES:
        np.testing.assert_allclose(now[col], before[col], rtol=1e-5, atol=1e-5, err_msg=col)


def test_a_job_split_by_restart_gives_the_same_rows(mnist_source, tmp_path: Path):
    """Restart 1 trained alone (``restarts=range(1, 2)``) == restart 1 of the whole job."""
    fetch_step(tmp_path / "mnist", mnist_source, tmp_path / "checksums.json")
    plan = build_plan(CONFIG)
    alone = train_job(
        plan.jobs["erm"],
        plan,
        cache_dir=tmp_path / "mnist",
        device="cpu",
        log_every=5,
        restarts_per_chunk=None,
        threads=2,
        runs_path=tmp_path / "runs.csv",
        curves_path=tmp_path / "curves.csv",
        restarts=range(1, 2),
    )
    before = pd.read_csv(OUT)
    before = before[(before["method"] == "erm") & (before["restart"] == 1)]
    assert alone["restart"].tolist() == [1]
    for col in VALUES:
        np.testing.assert_allclose(alone[col], before[col], rtol=1e-5, atol=1e-7, err_msg=col)
