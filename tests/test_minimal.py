"""The appendix minimal example."""

from __future__ import annotations

import pytest
import torch

from irm_bench.appendix.minimal import MinimalConfig, run_minimal
from irm_bench.envs.minimal import MinimalExample


def test_sample_moments_follow_the_equations():
    # e = 2: var x = 4, var y = 4 + 4 = 8, var z = 8 + 1 = 9; target = y1 + y2 has var 16.
    x, target = MinimalExample().sample(100_000, 2.0, torch.Generator().manual_seed(0))
    var = x.var(0)
    torch.testing.assert_close(var, torch.tensor([4.0, 4.0, 9.0, 9.0]), rtol=0.03, atol=0)
    assert float(target.var()) == pytest.approx(16.0, rel=0.03)


def test_same_seed_same_run_different_seed_differs():
    config = MinimalConfig(n_per_env=200, steps=20, log_every=10)
    a, fa = run_minimal(config)
    b, fb = run_minimal(config)
    _, fc = run_minimal(MinimalConfig(n_per_env=200, steps=20, log_every=10, seed=1))
    assert fa["phi"] == fb["phi"] and fa["phi"] != fc["phi"]
    assert a.equals(b)
    assert list(a["step"]) == [0, 10, 20]


def test_unknown_key_is_named():
    with pytest.raises(ValueError, match=r"minimal\.stesp"):
        MinimalConfig.from_mapping({"stesp": 3})


@pytest.mark.slow
def test_appendix_run_reaches_the_invariant_solution():
    # 50,000 SGD steps, split estimator: phi -> (1, 1, 0, 0); the run with torch seed 0
    # gave (0.9947, 1.0003, 0.0130, 0.0147).
    trajectory, final = run_minimal(MinimalConfig())
    phi = final["phi"]
    assert phi[0] == pytest.approx(1, abs=0.02) and phi[1] == pytest.approx(1, abs=0.02)
    assert phi[2] == pytest.approx(0, abs=0.03) and phi[3] == pytest.approx(0, abs=0.03)
    assert not final["diverged"] and final["steps"] == 50_000
    assert trajectory["step"].iloc[-1] == 50_000
    assert (trajectory["penalty"] < 0).any()  # the unbiased estimator is never clamped
