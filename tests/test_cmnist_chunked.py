"""The chunked step engine against whole-batch autograd: same loss, metrics and gradients.

The reference is :func:`irm_bench.cmnist.train.step_objective` differentiated by autograd
(itself checked against a plain ``nn.Linear`` MLP in ``test_cmnist_methods.py``). Chunks
of 7 samples make every packed colour group end in a partial chunk.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from irm_bench.cmnist.chunked import chunked_objective, prepare_inputs
from irm_bench.cmnist.model import init_mlp, pack_envs
from irm_bench.cmnist.presets import IRM_SETUP, MethodHparams
from irm_bench.cmnist.train import step_engine, step_objective, train_stacked
from irm_bench.envs.cmnist import TRAIN_ENVS, data_seed, make_environments
from irm_bench.methods import METHODS, methods_for
from irm_bench.mnist import load_mnist_train

CASES = [(m, False) for m in sorted(methods_for("cmnist"))] + [("erm", True)]


def _hp(method: str, **changes: Any) -> MethodHparams:
    base = dataclasses.replace(IRM_SETUP, method=method, hidden_dim=12, penalty_anneal_steps=0)
    if not METHODS[method].penalised:
        base = dataclasses.replace(base, penalty_weight=0.0)
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def digits(mnist_source, tmp_path_factory):
    """Real MNIST: two restarts' environments, 60 training digits per environment."""
    from irm_bench.mnist import fetch_mnist

    cache = tmp_path_factory.mktemp("mnist")
    fetch_mnist(cache, local_source=mnist_source)
    mnist = load_mnist_train(cache)
    per_restart = [make_environments(mnist, data_seed(0, r), max_train_per_env=60) for r in (0, 1)]
    return pack_envs(per_restart, TRAIN_ENVS), pack_envs(per_restart, ("test",))


def _perturbed_model(seeds, hidden: int, grayscale: bool):
    """Xavier weights plus noise on every parameter, biases included (init has zero biases)."""
    model = init_mlp(seeds, hidden, grayscale)
    gen = torch.Generator().manual_seed(7)
    for p in model.parameters():
        p.add_(0.05 * torch.randn(p.shape, generator=gen))
        p.requires_grad_(True)
    return model


def _autograd_grads(model, train, hp, lam, state, active):
    loss, metrics, terms = step_objective(model, train, hp, 3, state, lam)
    total = torch.where(active, loss, torch.zeros_like(loss)).sum()
    return loss.detach(), metrics, terms, torch.autograd.grad(total, model.parameters())


def _chunked_grads(model, train, hp, lam, state, active):
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    loss, metrics, terms, backward = chunked_objective(
        model, train, hp, lam, state, active=active, chunk=7
    )
    backward()
    grads = [p.grad.clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = None
    return loss.detach(), metrics, terms, grads


@pytest.mark.parametrize(("method", "grayscale"), CASES)
def test_chunked_step_equals_autograd_on_real_digits(digits, method, grayscale):
    """Loss, risks, accuracies, penalty, method state and all six gradients agree."""
    train, _ = digits
    penalised = METHODS[method].penalised
    hp = _hp(method, grayscale=grayscale, penalty_weight=1e3 if penalised else 0.0)
    # model 0 at λ = 1e3 (divided by it), model 1 at λ_t = 1 (as before the anneal step)
    lam = torch.tensor([1e3, 1.0]) if penalised else torch.zeros(2)
    state = torch.tensor([[0.3, 0.7], [0.6, 0.4]]) if method == "groupdro" else None
    active = torch.ones(2, dtype=torch.bool)
    model = _perturbed_model([3, 4], hp.hidden_dim, grayscale)
    ref = _autograd_grads(model, train, hp, lam, state, active)
    ours = _chunked_grads(model, train, hp, lam, state, active)
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-5, atol=1e-7)
    for name in ("risk", "accuracy", "scale_grad"):
        torch.testing.assert_close(getattr(ours[1], name), getattr(ref[1], name))
    torch.testing.assert_close(ours[2].penalty, ref[2].penalty, rtol=1e-5, atol=1e-9)
    if state is not None:
        torch.testing.assert_close(ours[2].state, ref[2].state)
    for got, want in zip(ours[3], ref[3], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


def test_stopped_model_gets_no_gradient_and_others_are_unchanged(digits):
    """A stopped (diverged) model: zero parameters, no gradient; the other as autograd."""
    train, _ = digits
    hp = _hp("fishr", penalty_weight=50.0)
    lam = torch.full((2,), 50.0)
    model = _perturbed_model([5, 6], hp.hidden_dim, False)
    with torch.no_grad():
        for p in model.parameters():
            p[1] = 0.0  # what the trainer leaves of a stopped model
    active = torch.tensor([True, False])
    ref = _autograd_grads(model, train, hp, lam, None, active)
    ours = _chunked_grads(model, train, hp, lam, None, active)
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-5, atol=1e-7)
    for got, want in zip(ours[3], ref[3], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
        assert not got[1].any()


@pytest.mark.parametrize("method", ["irmv1", "fishr"])
def test_training_with_either_engine_gives_the_same_run(digits, method):
    """12 steps with a penalty-weight fork at step 4: every reported number agrees."""
    train, test = digits
    hp = _hp(method, steps=12, penalty_anneal_steps=4, penalty_weight=1e3)
    results = {}
    for engine in ("autograd", "chunked"):
        model = init_mlp([8, 9], hp.hidden_dim, False)
        results[engine] = train_stacked(
            model, train, test, hp, log_every=3, penalty_weights=[10.0, 1e3], engine=engine
        )
    a, c = results["autograd"], results["chunked"]
    assert set(a.final) == set(c.final)
    for key in a.final:
        torch.testing.assert_close(
            torch.from_numpy(c.final[key]), torch.from_numpy(a.final[key]), rtol=1e-4, atol=1e-6
        )
    assert len(a.curves) == len(c.curves)


def test_engine_choice_and_errors():
    fp32 = init_mlp([1], 12, False)
    bf16 = init_mlp([1], 12, False, precision="bf16")
    assert step_engine(fp32) == "chunked"
    assert step_engine(bf16) == "autograd"
    assert step_engine(fp32, "autograd") == "autograd"
    with pytest.raises(ValueError, match="precision 'bf16'"):
        step_engine(bf16, "chunked")
    with pytest.raises(ValueError, match="unknown step engine 'fast'"):
        step_engine(fp32, "fast")
    with pytest.raises(ValueError, match="float32 only"):
        chunked_objective(
            bf16, None, _hp("erm"), torch.zeros(1), None, active=torch.ones(1, dtype=torch.bool)
        )


def test_prepared_inputs_drop_only_never_lit_pixels_and_padding(digits):
    """Lit pixels, group sizes and the ones column, checked against the packed data."""
    train, _ = digits
    inputs = prepare_inputs(train)
    for r in range(2):
        n_real = [int((train.weights[r, :, c] > 0).any(0).sum()) for c in (0, 1)]
        assert inputs.rows[r].tolist() == n_real
        assert sum(n_real) == 120  # 60 digits in each of env1, env2
        lit = (train.x[r] != 0).any(0).any(0).nonzero().flatten()
        assert torch.equal(inputs.pixels[r], lit)
        assert 0 < len(lit) < 196  # the reduction is exercised: some pixels never lit
        for c in (0, 1):
            x = inputs.x[r][c]
            assert torch.equal(x[:, :-1], train.x[r, c, : n_real[c]][:, lit])
            assert torch.equal(x[:, -1], torch.ones(n_real[c]))
