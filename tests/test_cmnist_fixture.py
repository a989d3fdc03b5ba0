"""The Colored MNIST trainer keeps the numbers it gave before the method contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from fixtures.make_cmnist_fixture import KEYS, OUT, VALUES, run_smoke_real


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
    for col in VALUES:
        np.testing.assert_allclose(now[col], before[col], rtol=1e-5, atol=1e-7, err_msg=col)
