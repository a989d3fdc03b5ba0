"""The chain SEM generator, its errors, and per-environment moments."""

from __future__ import annotations

import numpy as np
import pytest

from irm_bench.envs import ChainSEM, LinearMoments, SEMSetup, causal_noncausal_errors
from irm_bench.sem.study import SEMStudyConfig, draw_environments


def test_setup_codes_round_trip_and_bad_code_lists_known():
    assert SEMSetup.from_code("PES") == SEMSetup(hidden=True, hetero=True, scramble=True)
    assert SEMSetup.from_code("FOU").code == "FOU"
    with pytest.raises(ValueError, match=r"did you mean 'FOU'.*FOU, FOS"):
        SEMSetup.from_code("FUO")


def test_fully_observed_weights_and_orthogonal_scramble():
    sem = ChainSEM.draw("FOS", 10, np.random.default_rng(0))
    np.testing.assert_array_equal(sem.w_hx, np.eye(5))
    np.testing.assert_array_equal(sem.w_hy, 0)
    np.testing.assert_allclose(sem.scramble.T @ sem.scramble, np.eye(10), atol=1e-12)
    np.testing.assert_array_equal(sem.solution(), [1] * 5 + [0] * 5)
    assert not np.allclose(sem.scramble, np.eye(10))


def test_variances_match_the_structural_equations():
    # FEU, e = 2: x = h + e N, h = e N -> var x = 2 e^2 = 8; y = x + e N -> 12; z = y + N -> 13.
    rng = np.random.default_rng(1)
    sem = ChainSEM.draw("FEU", 10, rng)
    inputs, target = sem.sample(200_000, 2.0, rng)
    var = inputs.var(axis=0)
    np.testing.assert_allclose(var[:5], 8.0, rtol=0.03)
    np.testing.assert_allclose(var[5:], 13.0, rtol=0.03)
    np.testing.assert_allclose(target.var(), 5 * 12.0, rtol=0.03)
    # Homoskedastic Y (FOU): y's noise has unit scale, z's noise has scale e.
    sem = ChainSEM.draw("FOU", 10, rng)
    inputs, _ = sem.sample(200_000, 2.0, rng)
    np.testing.assert_allclose(inputs.var(axis=0)[5:], 8.0 + 1.0 + 4.0, rtol=0.03)


def test_partially_observed_weights_are_scaled_by_total_dim():
    # The reference divides N(0,1) weights by d = 10 (not d/2): entries have std 0.1.
    rng = np.random.default_rng(2)
    w = np.concatenate([ChainSEM.draw("POU", 10, rng).w_hy.ravel() for _ in range(400)])
    assert w.std() == pytest.approx(0.1, rel=0.05)


def test_scrambled_errors_are_zero_for_the_rotated_solution():
    sem = ChainSEM.draw("PES", 10, np.random.default_rng(3))
    solution = sem.solution()
    w_hat = sem.scramble.T @ solution  # what a perfect fit on scrambled inputs finds
    causal, noncausal = causal_noncausal_errors(sem.scramble @ w_hat, solution)
    assert causal == pytest.approx(0, abs=1e-24) and noncausal == pytest.approx(0, abs=1e-24)
    assert int((solution == 0).sum()) == 5
    # Errors are means over 5 coordinates: a unit miss on one causal coordinate gives 0.2.
    miss = solution.copy()
    miss[0] = 0
    assert causal_noncausal_errors(miss, solution) == pytest.approx((0.2, 0.0))


def test_same_seed_same_data_different_seed_different():
    config = SEMStudyConfig(n_per_env=50)
    a = draw_environments("POS", 3, config)
    b = draw_environments("POS", 3, config)
    c = draw_environments("POS", 3, SEMStudyConfig(n_per_env=50, seed=1))
    d = draw_environments("POS", 4, config)
    np.testing.assert_array_equal(a[1][2][0], b[1][2][0])
    np.testing.assert_array_equal(a[0].scramble, b[0].scramble)
    assert a[2] == b[2] != c[2]
    assert not np.allclose(a[1][0][0], c[1][0][0])
    assert not np.allclose(a[1][0][0], d[1][0][0])


def test_moments_match_direct_computation():
    rng = np.random.default_rng(4)
    envs = [(rng.normal(size=(n, 3)), rng.normal(size=n)) for n in (7, 9)]
    m = LinearMoments.from_samples(envs)
    x, y = envs[1]
    np.testing.assert_allclose(m.xx[1], x.T @ x / 9)
    np.testing.assert_allclose(m.xy[1], x.T @ y / 9)
    beta = np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(
        m.mse(beta[None])[0], [np.mean((e @ beta - t) ** 2) for e, t in envs]
    )
    pooled = m.pooled()
    xs, ys = np.vstack([e for e, _ in envs]), np.concatenate([t for _, t in envs])
    np.testing.assert_allclose(pooled.xx[0], xs.T @ xs / 16)
    np.testing.assert_allclose(pooled.y_mean[0], ys.mean())
    odd = LinearMoments.from_samples(envs, rows="odd")
    np.testing.assert_allclose(odd.xy[0], envs[0][0][1::2].T @ envs[0][1][1::2] / 3)
    assert list(odd.n) == [3, 4]
