"""The SEM study's generic batched trainer (irm_bench/sem/trainer.py).

Independent values: the per-environment statistics from moments against the same
quantities on the raw samples (autograd dummy scale, torch.func per-example gradients),
and the batched trainer's trajectory against a one-model autograd loop on raw samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch.func import grad, vmap

import irm_bench.methods as methods_pkg
from irm_bench.envs.moments import LinearMoments
from irm_bench.methods import METHODS
from irm_bench.methods.contract import EnvStats, MethodSpec, ObjectiveTerms
from irm_bench.penalties import fishr_penalty, last_layer_grad_variance, vrex_penalty
from irm_bench.sem.study import SEMStudyConfig, draw_environments, run_sem_job
from irm_bench.sem.trainer import (
    GradientSEMConfig,
    MomentTensors,
    SEMGradientMethod,
    sem_env_stats,
    train_gradient_batched,
    train_one_autograd,
)

ALL = frozenset({"scale_grads", "grad_variance"})


def _case(n_draws=2, n=60, setup="PES"):
    config = SEMStudyConfig(n_per_env=n, dim=4)
    envs = [draw_environments(setup, k, config)[1][:2] for k in range(n_draws)]
    moments = LinearMoments.stack([LinearMoments.from_samples(e, fourth=True) for e in envs])
    return envs, moments


def _raw_stats(phi, envs):
    """Risks, dummy-scale gradients and per-example gradient variances on raw samples."""
    risks, scales, variances = [], [], []
    w = torch.ones(phi.shape[0], dtype=torch.float64)
    for x, y in envs:
        x, y = torch.as_tensor(x), torch.as_tensor(y)
        h = x @ phi
        s = torch.ones((), dtype=torch.float64, requires_grad=True)
        risk = (s * (h @ w) - y).square().mean()
        risks.append(risk)
        scales.append(torch.autograd.grad(risk, s, create_graph=True)[0])
        g = vmap(grad(lambda w_, h_, y_: (h_ @ w_ - y_).square()), (None, 0, 0))(w, h, y)
        variances.append(g.var(0, unbiased=False))
    return torch.stack(risks), torch.stack(scales), torch.stack(variances)


def test_statistics_from_moments_equal_those_on_raw_samples_with_their_gradients():
    envs, moments = _case()
    data = MomentTensors.from_moments(moments, torch.float64, "cpu")
    gen = torch.Generator().manual_seed(0)
    phi = (torch.eye(4) + 0.3 * torch.randn(2, 3, 4, 4, generator=gen)).double()
    phi.requires_grad_()
    stats = sem_env_stats(phi, data, ALL)
    for draw in range(2):
        for g in range(3):
            m = draw * 3 + g
            p = phi[draw, g].detach().clone().requires_grad_()
            risks, scales, variances = _raw_stats(p, envs[draw])
            torch.testing.assert_close(stats.risks[m], risks, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(stats.scale_grads[m], scales, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(stats.grad_variance[m], variances, rtol=1e-9, atol=1e-10)
            # The V-REx and Fishr penalties and their gradients in Phi.
            for penalty, moment_value in (
                (vrex_penalty(risks[None]), vrex_penalty(stats.risks[m : m + 1])),
                (fishr_penalty(variances[None]), fishr_penalty(stats.grad_variance[m : m + 1])),
            ):
                expected = torch.autograd.grad(penalty.sum(), p, retain_graph=True)[0]
                actual = torch.autograd.grad(moment_value.sum(), phi, retain_graph=True)[0]
                torch.testing.assert_close(moment_value, penalty, rtol=1e-9, atol=1e-12)
                torch.testing.assert_close(actual[draw, g], expected, rtol=1e-8, atol=1e-10)


def test_grad_variance_equals_the_shared_last_layer_helper():
    # Same quantity through penalties.last_layer_grad_variance (residual 2 r, features h).
    envs, moments = _case(n_draws=1)
    data = MomentTensors.from_moments(moments, torch.float64, "cpu")
    phi = torch.eye(4, dtype=torch.float64)[None, None] * 1.2
    stats = sem_env_stats(phi, data, ALL)
    x = torch.as_tensor(np.vstack([e[0] for e in envs[0]]))
    y = torch.as_tensor(np.concatenate([e[1] for e in envs[0]]))
    h = x @ phi[0, 0]
    n = len(envs[0][0][1])
    weights = torch.zeros(1, 2, 2 * n, dtype=torch.float64)
    weights[0, 0, :n], weights[0, 1, n:] = 1 / n, 1 / n
    expected = last_layer_grad_variance((2 * (h.sum(1) - y))[None], h[None], weights)
    torch.testing.assert_close(stats.grad_variance, expected[..., :-1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("name", "hparam", "grid"),
    [("vrex", "lambda", (1.0, 30.0)), ("fishr", "lambda", (1.0, 30.0)),
     ("groupdro", "eta", (0.01, 1.0))],
)  # fmt: skip
def test_batched_trainer_follows_the_one_model_autograd_loop(name, hparam, grid):
    spec = METHODS[name]
    envs, moments = _case()
    config = GradientSEMConfig(hparam=hparam, grid=grid, steps=40, lr=1e-2)
    _, history = train_gradient_batched(
        spec, moments, config, dtype=torch.float64, record_every=10
    )
    for draw in range(2):
        raw = [(torch.as_tensor(x), torch.as_tensor(y)) for x, y in envs[draw]]
        for g in range(len(grid)):
            _, expected = train_one_autograd(
                spec, raw, config.point_hparams(spec, g), config.point_lambda(spec, g),
                steps=40, lr=1e-2, record_every=10,
            )  # fmt: skip
            actual = np.stack([h[draw, g] for h in history])
            np.testing.assert_allclose(actual, torch.stack(expected).numpy(), rtol=1e-7, atol=1e-9)
            assert not np.allclose(actual[-1], np.eye(4))  # it moved


@dataclass(frozen=True)
class _ToyHparams:
    power: float = 2.0


def _toy_objective(stats: EnvStats, hparams: _ToyHparams, state) -> ObjectiveTerms:
    """Mean risk plus mean |R_e - mean R|^power: a module-local penalty."""
    risks = stats.risks
    dev = (risks - risks.mean(-1, keepdim=True)).abs().pow(hparams.power).mean(-1)
    return ObjectiveTerms(risk_term=risks.mean(-1), penalty=dev)


TOY = MethodSpec(
    name="toy", label="Toy", colour="#000000", studies=frozenset({"sem"}),
    hparams=_ToyHparams, objective=_toy_objective, penalised=True,
)  # fmt: skip


def test_a_method_registered_in_a_test_runs_in_the_sem_job(monkeypatch):
    monkeypatch.setitem(METHODS, "toy", TOY)
    section = {
        "n_draws": 2, "draws_per_job": 2, "n_per_env": 50, "methods": ["erm", "toy"],
        "toy": {"lambda_grid": [0.5, 5.0], "power": 3.0, "steps": 30},
    }  # fmt: skip
    config = SEMStudyConfig.from_mapping(section)
    assert config.gradient["toy"].hparams == {"power": 3.0}
    rows, coefs, timings = run_sem_job(config, "FOU", [0, 1])
    toy = rows[rows["method"] == "toy"]
    assert len(toy) == 4 and set(toy["hparam"]) == {"lambda"}
    assert sorted(set(toy["lambda"])) == [0.5, 5.0]
    assert toy.groupby("draw")["selected"].sum().eq(1).all()
    assert np.isfinite(toy["causal_error"]).all() and "toy" in timings
    assert len(coefs[coefs["method"] == "toy"]) == 4 * 10
    assert methods_pkg.get_method("toy") is TOY


@dataclass(frozen=True)
class _BoomHparams:
    scale: float = 0.0


def _exploding(stats: EnvStats, hparams: _BoomHparams, state) -> ObjectiveTerms:
    # exp(80 R) overflows float32 (R ~ 5 here): a fit that turns non-finite at once.
    risks = stats.risks
    return ObjectiveTerms(
        risk_term=risks.mean(-1), penalty=torch.exp(hparams.scale * risks.mean(-1))
    )


def test_non_finite_models_are_stopped_and_their_step_recorded():
    spec = MethodSpec(
        name="boom", label="Boom", colour="#000000", studies=frozenset({"sem"}),
        hparams=_BoomHparams, objective=_exploding, penalised=True,
    )  # fmt: skip
    _, moments = _case(n=40, setup="FOU")
    config = GradientSEMConfig(hparam="scale", grid=(0.0, 80.0), steps=50, check_every=5)
    # Three environments: the second training one doubles as the validation one.
    fit = SEMGradientMethod(spec, config).fit(moments.envs([0, 1, 1]))
    assert not fit.diverged[:, 0].any() and fit.diverged[:, 1].all()
    assert set(fit.diverged_step[:, 1]) == {5}
    assert np.isnan(fit.coefficients[:, 1]).all() and np.isfinite(fit.coefficients[:, 0]).all()
    assert (fit.selected == 0).all()


def test_config_blocks_name_their_keys():
    fishr = METHODS["fishr"]
    with pytest.raises(ValueError, match=r"unknown key 'sem\.fishr\.eta_grid'"):
        GradientSEMConfig.from_mapping(fishr, {"eta_grid": [1.0]}, "sem.fishr")
    with pytest.raises(ValueError, match=r"'sem\.groupdro\.lambda_grid'"):
        GradientSEMConfig.from_mapping(METHODS["groupdro"], {"lambda_grid": [1.0]}, "sem.groupdro")
    with pytest.raises(ValueError, match=r"'sem\.groupdro\.eta_grid'.*> 0"):
        GradientSEMConfig.from_mapping(METHODS["groupdro"], {"eta_grid": [-1.0]}, "sem.groupdro")
    assert math.isnan(GradientSEMConfig().point_lambda(METHODS["groupdro"], 0))
