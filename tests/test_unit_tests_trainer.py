"""Batched unit-test trainer against a one-model autograd loop; ANDMask and IGA by hand."""

from __future__ import annotations

import pytest
import torch

from irm_bench.envs import make_task
from irm_bench.methods import EnvStats, get_method
from irm_bench.methods.andmask import ANDMaskHparams
from irm_bench.methods.contract import NoHparams
from irm_bench.methods.groupdro import GroupDROHparams
from irm_bench.methods.iga import iga_penalty
from irm_bench.seeds import torch_generator
from irm_bench.unit_tests import loop, trainer


def test_andmask_direction_two_environments_by_hand():
    # g1 = (3, 4 | 1): weights / 5 -> (0.6, 0.8); g2 = (0, 2 | -2): weights / 2 -> (0, 1).
    # Sign sums (1, 2 | 0); tau 0.9: keep |sum| > 1.8 -> only w2, mean (0.8 + 1) / 2.
    grads = torch.tensor([[[3.0, 4.0, 1.0], [0.0, 2.0, -2.0]]])
    stats = EnvStats(risks=torch.zeros(1, 2), param_grads=grads)
    rule = get_method("andmask").gradient_rule
    torch.testing.assert_close(rule(stats, ANDMaskHparams(tau=0.9)), torch.tensor([[0, 0.9, 0]]))
    # tau 0.4: keep |sum| > 0.8 -> w1 too, mean (0.6 + 0) / 2; the bias (0) stays masked.
    torch.testing.assert_close(
        rule(stats, ANDMaskHparams(tau=0.4)), torch.tensor([[0.3, 0.9, 0.0]])
    )
    with pytest.raises(ValueError, match=r"andmask\.tau"):
        ANDMaskHparams(tau=1.5)


def test_iga_penalty_two_environments_by_hand():
    # mean (2, 1, 1); deviations (-1, 1, -1) and (1, -1, 1): 3 + 3.
    grads = torch.tensor([[[1.0, 2.0, 0.0], [3.0, 0.0, 2.0]]])
    assert iga_penalty(grads).item() == pytest.approx(6.0)
    terms = get_method("iga").objective(
        EnvStats(risks=torch.tensor([[1.0, 3.0]]), param_grads=grads), NoHparams(), None
    )
    assert terms.risk_term.item() == pytest.approx(2.0) and terms.penalty.item() == 6.0


CASES = {
    "erm": ({}, NoHparams()),
    "irmv1": ({"risk_scale": 0.2, "penalty_scale": 2.4}, NoHparams()),
    "vrex": ({"penalty_scale": 3.0}, NoHparams()),
    "fishr": ({"penalty_scale": 50.0}, NoHparams()),
    "groupdro": ({"eta": 0.3}, GroupDROHparams(eta=0.3)),
    "iga": ({"penalty_scale": 20.0}, NoHparams()),
    "andmask": ({"tau": 0.6}, ANDMaskHparams(tau=0.6)),
}


@pytest.mark.parametrize("task_name", ["Example1s", "Example2"])
@pytest.mark.parametrize("method", list(CASES))
def test_batched_trainer_matches_the_one_model_loop(method, task_name):
    extra, hp = CASES[method]
    n_seeds, n_trials, n, steps = 2, 2, 32, 15
    xs, ys = [], []
    for seed in range(n_seeds):
        task = make_task(task_name, 3, 2, 3, torch_generator(seed))
        samples = [task.sample(n, env, "train", torch_generator(100 + seed)) for env in task.envs]
        xs.append(torch.stack([x for x, _ in samples]).double())
        ys.append(torch.stack([y for _, y in samples]).double())
    x, y = torch.stack(xs), torch.stack(ys)
    lrs, wds = [1e-2, 3e-2], [0.0, 1e-2]
    trials = trainer.TrialBatch(
        lr=torch.tensor(lrs),
        wd=torch.tensor(wds),
        risk_scale=torch.full((n_trials,), extra.get("risk_scale", 1.0)),
        penalty_scale=torch.full((n_trials,), extra.get("penalty_scale", 0.0)),
        method_hparams=(hp,) * n_trials,
    )
    init = trainer.init_models(n_trials, n_seeds, 5, [torch_generator(7 + k) for k in range(2)])
    init = trainer.LinearModels(init.weight.double(), init.bias.double())
    out = trainer.train(get_method(method), trials, init, x, y, task.task, steps)
    assert not out.diverged.any()
    for k in range(n_trials):
        for s in range(n_seeds):
            hparams = {"lr": lrs[k], "wd": wds[k], **extra}
            envs = [(x[s, e], y[s, e]) for e in range(3)]
            ref = loop.train_one(
                method, hparams, init.weight[k, s], init.bias[k, s].item(), envs, task.task, steps
            )
            got = torch.cat([out.weight[k, s], out.bias[k, s, None]])
            want = torch.cat([ref.weight[0], ref.bias]).detach()
            # float64; Adam's m / sqrt(v) amplifies rounding where a gradient coordinate
            # changes sign, so agreement is ~1e-9 after 15 steps, not 1e-15.
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    # The models moved: a test of a trajectory, not of the initial point.
    assert (out.weight - init.weight).abs().max() > 1e-3


def test_fishr_grad_variance_equals_the_shared_penalty_helper():
    from irm_bench.penalties import last_layer_grad_variance

    g = torch_generator(3)
    x = torch.randn(1, 2, 10, 4, generator=g, dtype=torch.float64)
    y = (torch.rand(1, 2, 10, generator=g, dtype=torch.float64) > 0.5).double()
    models = trainer.LinearModels(
        torch.randn(1, 1, 4, generator=g, dtype=torch.float64), torch.zeros(1, 1).double()
    )
    stats = trainer.env_stats(models, x, y, "classification", frozenset({"grad_variance"}))
    scores = models.predict(x)[0, 0]  # (E, n)
    residual = (torch.sigmoid(scores) - y[0]).reshape(1, 20)
    weights = torch.zeros(1, 2, 20, dtype=torch.float64)
    weights[0, 0, :10], weights[0, 1, 10:] = 0.1, 0.1
    want = last_layer_grad_variance(residual, x[0].reshape(1, 20, 4), weights)
    torch.testing.assert_close(stats.grad_variance, want)
