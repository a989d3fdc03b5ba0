"""The batched linear IRMv1 trainer: agreement with a one-model autograd loop,
selection, divergence handling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from irm_bench.envs import LinearMoments
from irm_bench.methods.irm_linear import (
    IRMv1Config,
    LinearIRMv1,
    penalty_weight_lambda,
    select_by_validation,
    train_batched,
    train_one_autograd,
)
from irm_bench.sem.study import SEMStudyConfig, draw_environments


@pytest.mark.slow
def test_batched_trainer_matches_one_model_autograd_loop():
    # Same data, same init (Phi = I), 2,000 Adam steps: every (draw, reg) model of the batch
    # follows the trajectory of the reference-style autograd loop on the raw samples.
    torch.set_num_threads(1)
    config = SEMStudyConfig(n_per_env=500)
    draws = [draw_environments(setup, 0, config)[1] for setup in ("FES", "POS")]
    regs = (0.0, 1e-2)
    moments = LinearMoments.stack([LinearMoments.from_samples(e[:2]) for e in draws])
    result = train_batched(moments, regs, IRMv1Config(reg_grid=regs, steps=2000))
    for k, envs in enumerate(draws):
        pairs = [(torch.tensor(x).float(), torch.tensor(y).float()) for x, y in envs[:2]]
        for j, reg in enumerate(regs):
            phi, _ = train_one_autograd(pairs, reg=reg, steps=2000)
            assert not np.allclose(phi.numpy(), np.eye(10), atol=0.05)  # it moved
            np.testing.assert_allclose(result.phi[k * len(regs) + j], phi.numpy(), atol=2e-5)


def test_selection_takes_first_of_ties_and_skips_nan():
    val = np.array([[3.0, 1.0, 1.0, 2.0], [np.nan, 5.0, 4.0, 4.0], [np.nan] * 4])
    np.testing.assert_array_equal(select_by_validation(val), [1, 2, -1])


def test_lambda_is_the_equivalent_penalty_weight():
    assert math.isinf(penalty_weight_lambda(0.0))
    assert penalty_weight_lambda(0.1) == pytest.approx(9.0)
    assert penalty_weight_lambda(1e-5) == pytest.approx(99999.0)


def test_diverged_models_are_flagged_stopped_and_isolated():
    config = SEMStudyConfig(n_per_env=100)
    good = LinearMoments.from_samples(draw_environments("FOU", 0, config)[1][:2])
    bad = LinearMoments(
        n=good.n,
        xx=good.xx * 1e36,
        xy=good.xy * 1e36,
        yy=good.yy,
        x_mean=good.x_mean,
        y_mean=good.y_mean,
    )  # fmt: skip  (float32 overflow: the gradient becomes inf, Adam's update NaN)
    hp = IRMv1Config(reg_grid=(0.0, 0.1), steps=50, check_every=10)
    both = train_batched(LinearMoments.stack([good, bad]), hp.reg_grid, hp)
    alone = train_batched(LinearMoments.stack([good]), hp.reg_grid, hp)
    np.testing.assert_array_equal(both.diverged, [False, False, True, True])
    np.testing.assert_array_equal(both.diverged_step, [-1, -1, 10, 10])
    assert np.isnan(both.phi[2:]).all()
    # Healthy models are untouched (up to float32 rounding of a different batch width).
    np.testing.assert_allclose(both.phi[:2], alone.phi, rtol=1e-6, atol=1e-7)


def test_fit_selects_on_the_last_environment():
    config = SEMStudyConfig(n_per_env=200)
    envs = draw_environments("FEU", 1, config)[1]
    moments = LinearMoments.stack([LinearMoments.from_samples(envs)])
    fit = LinearIRMv1(IRMv1Config(reg_grid=(0.0, 0.5), steps=200)).fit(moments)
    val = moments.envs([2]).mse(fit.coefficients)[0, :, 0]
    assert fit.selected[0] == int(np.argmin(val))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="reg"):
        IRMv1Config(reg_grid=())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        IRMv1Config(reg_grid=(2.0,))
    with pytest.raises(KeyError, match="penalty estimator"):
        IRMv1Config(penalty_estimator="cubic")
