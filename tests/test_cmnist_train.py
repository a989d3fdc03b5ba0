"""Colored MNIST model and training: colour split, batching, penalty, divergence, tables."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from irm_bench.cmnist.model import env_metrics, init_mlp, pack_envs
from irm_bench.cmnist.pipeline import summarise
from irm_bench.cmnist.presets import (
    PAPER_HPARAMS,
    PAPER_LAMBDA,
    MethodHparams,
    build_plan,
    get_preset,
)
from irm_bench.cmnist.reference import ReferenceMLP, reference_loss
from irm_bench.cmnist.train import train_stacked
from irm_bench.envs.cmnist import COLOUR_FLIP, TRAIN_ENVS, ColoredMnistEnv


def _synthetic_env(name: str, n: int, gen: torch.Generator) -> ColoredMnistEnv:
    """A small environment with random digits (structure of the real one, fast)."""
    labels = (torch.rand(n, generator=gen) < 0.5).float()
    colours = ((torch.rand(n, generator=gen) < COLOUR_FLIP[name]).float() != labels).long()
    return ColoredMnistEnv(
        name=name,
        colour_flip=COLOUR_FLIP[name],
        gray=torch.randint(0, 256, (n, 14, 14), generator=gen, dtype=torch.uint8),
        digits=torch.randint(0, 10, (n,), generator=gen),
        labels=labels,
        colours=colours,
    )


def _envs(seed: int, n: int = 64) -> dict[str, ColoredMnistEnv]:
    gen = torch.Generator().manual_seed(seed)
    return {
        name: _synthetic_env(name, n + 7 * i, gen)
        for i, name in enumerate(("env1", "env2", "test"))
    }


def _small(method: str, **changes) -> MethodHparams:
    return dataclasses.replace(PAPER_HPARAMS[method], **{"hidden_dim": 16, **changes})


def _our_loss(model, packed, hp, step):
    lam_t = hp.penalty_weight_at(step)
    m = env_metrics(model.logits(packed.x), packed)
    loss = m.risk.mean(1) + hp.l2_weight * model.squared_norm() + lam_t * m.penalty.mean(1)
    return loss / lam_t if lam_t > 1 else loss


@pytest.mark.parametrize("method", ["irmv1", "erm", "grayscale"])
def test_colour_split_matches_reference_loss_and_gradients(method):
    """Batched colour-split forward + closed-form penalty == two-channel autograd reference."""
    per_restart = [_envs(1), _envs(2)]
    packed = pack_envs(per_restart, TRAIN_ENVS)
    hp = _small(method, penalty_weight=1e3 if method == "irmv1" else 0.0, penalty_anneal_steps=0)
    model = init_mlp([11, 12], hp.hidden_dim, hp.grayscale)
    for p in model.parameters():
        p.requires_grad_(True)
    ours = _our_loss(model, packed, hp, step=5)
    grads = torch.autograd.grad(ours.sum(), model.parameters())
    for r, envs in enumerate(per_restart):
        ref = ReferenceMLP(model, r)
        ref_loss = reference_loss(ref, [envs[e] for e in TRAIN_ENVS], hp, step=5)
        assert ours[r].item() == pytest.approx(ref_loss.item(), rel=1e-5)
        ref_grads = torch.autograd.grad(ref_loss, list(ref.parameters()))
        # nn.Linear stores (out, in); ours (in, out)
        transposed = (True, False, True, False, True, False)
        pairs = [
            (g[r].reshape(rg.shape[::-1] if t else rg.shape), rg.T if t else rg)
            for g, rg, t in zip(grads, ref_grads, transposed, strict=True)
        ]
        for ours_g, ref_g in pairs:
            torch.testing.assert_close(ours_g, ref_g, rtol=1e-4, atol=1e-6)


def test_penalty_changes_training():
    envs = [_envs(3)]
    train, test = pack_envs(envs, TRAIN_ENVS), pack_envs(envs, ("test",))
    weights = {}
    for lam in (0.0, 1e3):
        hp = _small("irmv1", steps=4, penalty_weight=lam, penalty_anneal_steps=0)
        model = init_mlp([5], hp.hidden_dim, False)
        train_stacked(model, train, test, hp, log_every=1)
        weights[lam] = model.w2.clone()
    assert not torch.allclose(weights[0.0], weights[1e3])
    # the gradient of λ·penalty alone is non-zero
    model = init_mlp([5], 16, False)
    for p in model.parameters():
        p.requires_grad_(True)
    penalty = env_metrics(model.logits(train.x), train).penalty.mean()
    grads = torch.autograd.grad(1e3 * penalty, model.parameters())
    assert sum(g.abs().sum() for g in grads) > 0


def test_grayscale_oracle_ignores_colour():
    envs = _envs(4)
    swapped = {k: dataclasses.replace(v, colours=1 - v.colours) for k, v in envs.items()}
    model = init_mlp([9], 16, grayscale=True)
    ref = ReferenceMLP(model, 0)
    images = envs["env1"].images()
    torch.testing.assert_close(ref(images), ref(images.flip(1)), rtol=0, atol=0)
    a = env_metrics(model.logits(pack_envs([envs], TRAIN_ENVS).x), pack_envs([envs], TRAIN_ENVS))
    b = env_metrics(
        model.logits(pack_envs([swapped], TRAIN_ENVS).x), pack_envs([swapped], TRAIN_ENVS)
    )
    torch.testing.assert_close(a.risk, b.risk)
    torch.testing.assert_close(a.accuracy, b.accuracy)


def test_reported_metrics_are_before_the_last_update():
    """With steps = 1 nothing is updated: the reported metrics are those at initialisation."""
    envs = [_envs(5)]
    train, test = pack_envs(envs, TRAIN_ENVS), pack_envs(envs, ("test",))
    hp = _small("erm", steps=1)
    model = init_mlp([3], 16, False)
    expected = env_metrics(model.logits(train.x), train)
    init_w2 = model.w2.clone()
    result = train_stacked(model, train, test, hp, log_every=10)
    assert torch.equal(model.w2, init_w2)
    assert result.final["env1_accuracy"][0] == pytest.approx(expected.accuracy[0, 0].item())
    assert result.final["env2_risk"][0] == pytest.approx(expected.risk[0, 1].item(), rel=1e-6)


def test_batched_restarts_equal_separate_runs():
    per_restart = [_envs(6), _envs(7)]
    hp = _small("irmv1", steps=6, penalty_anneal_steps=2, penalty_weight=100.0)
    both = train_stacked(
        m := init_mlp([21, 22], 16, False),
        pack_envs(per_restart, TRAIN_ENVS),
        pack_envs(per_restart, ("test",)),
        hp,
        log_every=2,
    )
    for r, seed in enumerate((21, 22)):
        alone = init_mlp([seed], 16, False)
        single = train_stacked(
            alone,
            pack_envs([per_restart[r]], TRAIN_ENVS),
            pack_envs([per_restart[r]], ("test",)),
            hp,
            log_every=2,
        )
        torch.testing.assert_close(m.w2[r], alone.w2[0], rtol=1e-5, atol=1e-6)
        assert both.final["test_accuracy"][r] == pytest.approx(single.final["test_accuracy"][0])


def test_divergence_stops_one_restart_only():
    per_restart = [_envs(8), _envs(9)]
    train, test = pack_envs(per_restart, TRAIN_ENVS), pack_envs(per_restart, ("test",))
    hp = _small("erm", steps=5)
    model = init_mlp([1, 2], 16, False)
    model.w2[1, 0, 0] = float("nan")  # restart 1 is broken from the start
    result = train_stacked(model, train, test, hp, log_every=1)
    assert result.diverged.tolist() == [False, True]
    assert result.diverged_step.tolist() == [-1, 0]
    assert np.isfinite(result.final["env1_accuracy"][0]) and np.isnan(
        result.final["env1_accuracy"][1]
    )
    assert torch.isfinite(model.w2).all()
    clean = init_mlp([1], 16, False)
    train_stacked(
        clean,
        pack_envs(per_restart[:1], TRAIN_ENVS),
        pack_envs(per_restart[:1], ("test",)),
        hp,
        log_every=1,
    )
    torch.testing.assert_close(model.w2[0], clean.w2[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("anneal", "steps"), [(3, 8), (0, 5), (9, 6)])
def test_penalty_weight_fork_matches_each_lambda_trained_alone(anneal, steps):
    """One trunk forked into λ ∈ {0, 1, 1e3} == three separate runs (float rounding).

    Covers a fork inside the run, at step 0 (no anneal) and never (anneal after the last
    step: all copies identical to the end).
    """
    per_restart = [_envs(3), _envs(4)]
    train, test = pack_envs(per_restart, TRAIN_ENVS), pack_envs(per_restart, ("test",))
    hp = _small("irmv1", steps=steps, penalty_anneal_steps=anneal)
    weights = (0.0, 1.0, 1e3)
    forked_model = init_mlp([5, 6], 16, False)
    forked = train_stacked(forked_model, train, test, hp, log_every=2, penalty_weights=weights)
    assert forked_model.n_models == 6 and forked.final["test_risk"].shape == (6,)
    for k, lam in enumerate(weights):
        alone_model = init_mlp([5, 6], 16, False)
        alone = train_stacked(
            alone_model, train, test, dataclasses.replace(hp, penalty_weight=lam), log_every=2
        )
        for r in range(2):
            pos = k * 2 + r
            torch.testing.assert_close(
                forked_model.w2[pos], alone_model.w2[r], rtol=1e-5, atol=1e-6
            )
            for key in ("env1_risk", "env2_penalty", "test_accuracy", "gray_test_risk"):
                assert forked.final[key][pos] == pytest.approx(alone.final[key][r], rel=1e-5)
        curve = forked.curves[forked.curves["restart_pos"].isin([2 * k, 2 * k + 1])]
        assert len(curve) == len(alone.curves)
        np.testing.assert_allclose(curve["value"], alone.curves["value"], rtol=1e-5, atol=1e-7)


def test_bf16_option_autocasts_the_matmuls_only():
    """bf16: logits within bfloat16 rounding of fp32's, float32 out, float32 gradients.

    bfloat16 keeps 8 significant bits (relative rounding 2^-9 ≈ 2e-3 per value); three
    layers of sums of ~400 products stay within a few 1e-2 of the logits' scale.
    """
    train = pack_envs([_envs(5, n=200)], TRAIN_ENVS)
    fp32 = init_mlp([7], 32, False)
    bf16 = init_mlp([7], 32, False, precision="bf16")
    for p in bf16.parameters():
        p.requires_grad_(True)
    a, b = fp32.logits(train.x), bf16.logits(train.x)
    assert b.dtype == torch.float32
    assert not torch.equal(a, b)  # it did run in bfloat16
    scale = a.abs().max()
    assert (a - b).abs().max() <= 3e-2 * scale
    b.sum().backward()
    assert all(p.grad.dtype == torch.float32 for p in bf16.parameters())
    with pytest.raises(ValueError, match="precision must be one of"):
        dataclasses.replace(PAPER_HPARAMS["erm"], precision="fp16")
    plan = build_plan({"preset": "default", "precision": "bf16"})
    assert {j.hparams.precision for j in plan.jobs.values()} == {"bf16"}


def test_plan_trains_every_lambda_in_one_fork_and_shares_the_paper_point():
    plan = build_plan({"preset": "paper"})
    assert plan.lambdas[:6] == (0.0, 1.0, 10.0, 100.0, 1000.0, 10000.0)
    assert PAPER_LAMBDA in plan.lambdas and 1e5 in plan.lambdas and 1e6 in plan.lambdas
    irm = plan.jobs["irmv1"]
    assert [p.penalty_weight for p in irm.points] == list(plan.lambdas)
    assert [p.lambda_index for p in irm.points] == list(range(9))
    assert irm.point(PAPER_LAMBDA).studies() == {"table1": 10, "sweep": 10}
    assert irm.point(0.0).studies() == {"sweep": 10}
    # erm, grayscale, vrex, fishr and IRMv1 (all 9 λ)
    assert sorted(plan.jobs) == ["erm", "fishr", "grayscale", "irmv1", "vrex"]
    assert {j.restarts for j in plan.jobs.values()} == {10}
    # 190 shared steps + 9 × 311: the estimate grows with the forked steps only
    one = dataclasses.replace(irm, points=irm.points[:1])
    assert irm.cpu_minutes() > one.cpu_minutes()
    custom = build_plan(
        {"preset": "default", "lambda_grid": [0.5], "restarts": 3, "sweep_restarts": 2}
    )
    assert custom.lambdas == (0.5, PAPER_LAMBDA)
    assert custom.jobs["irmv1"].point(PAPER_LAMBDA).studies() == {"table1": 3}
    assert custom.jobs["irmv1"].point(0.5).studies() == {"sweep": 2}
    assert custom.jobs["irmv1"].restarts == 3
    # The default preset: λ = 0 beside the paper's λ, one restart each; sweep_restarts 0
    # turns its sweep off (IRMv1 trains the paper's λ only, for Table 1).
    default = build_plan({"preset": "default"})
    assert default.lambdas == (0.0, PAPER_LAMBDA) and default.sweep_indices == (0, 1)
    assert default.jobs["irmv1"].point(PAPER_LAMBDA).studies() == {"table1": 1, "sweep": 1}
    assert default.jobs["irmv1"].point(0.0).studies() == {"sweep": 1}
    off = build_plan({"preset": "default", "sweep_restarts": 0})
    assert off.lambdas == (PAPER_LAMBDA,) and off.sweep_indices == ()
    assert [p.studies() for p in off.jobs["irmv1"].points] == [{"table1": 1}]
    short = build_plan({"preset": "default", "steps": 7})
    assert {j.hparams.steps for j in short.jobs.values()} == {7}
    with pytest.raises(KeyError, match="did you mean 'paper'"):
        get_preset("papr")


def test_summarise_golden(tmp_path):
    """Means and ddof=0 stds over non-diverged restarts, by hand."""
    rows = []
    for method, study, lam, accs in (
        ("erm", "table1", 0.0, [(0.8, 0.2, 0.6), (0.9, 0.1, 0.7), (None, None, None)]),
        ("irmv1", "table1", PAPER_LAMBDA, [(0.7, 0.6, 0.65)]),
        ("irmv1", "sweep", PAPER_LAMBDA, [(0.7, 0.6, 0.65), (0.5, 0.8, 0.7)]),
        ("vrex", "table1", PAPER_LAMBDA, [(0.7, 0.6, 0.65)]),
    ):
        for r, (tr, te, gr) in enumerate(accs):
            rows.append(dict(protocol="irm-paper-cmnist", method=method, study=study, restart=r,
                             lambda_index=1 if method == "irmv1" else None, diverged=tr is None,
                             train_acc=tr, test_acc=te, gray_test_acc=gr,
                             **{"lambda": lam}))  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    summarise(tmp_path / "runs.csv", tmp_path / "acc.csv", tmp_path / "sweep.csv")
    acc = pd.read_csv(tmp_path / "acc.csv").set_index("method")
    assert acc.loc["erm", "n_restarts"] == 3 and acc.loc["erm", "n_diverged"] == 1
    assert acc.loc["erm", "train_acc_mean"] == pytest.approx(0.85)
    assert acc.loc["erm", "train_acc_std"] == pytest.approx(0.05)  # ddof = 0
    assert acc.loc["irmv1", "test_acc_std"] == 0.0
    assert acc.loc["erm", "gray_test_acc_mean"] == pytest.approx(0.65)
    assert acc.loc["erm", "gray_test_acc_std"] == pytest.approx(0.05)
    assert list(acc.index) == ["erm", "irmv1", "vrex"]  # registry order
    sweep = pd.read_csv(tmp_path / "sweep.csv")
    assert sweep["test_acc_mean"].tolist() == pytest.approx([0.7])
    assert sweep["test_acc_std"].tolist() == pytest.approx([0.1])
    assert sweep["lambda_index"].tolist() == [1]
    assert sweep["method"].tolist() == ["irmv1"]
    assert sweep["gray_test_acc_mean"].tolist() == pytest.approx([0.675])


def test_hidden_width_padding_is_exact():
    """h = 13 stored as 16: padded units stay exactly 0 and the logits match h = 13."""
    per_restart = [_envs(10)]
    train, test = pack_envs(per_restart, TRAIN_ENVS), pack_envs(per_restart, ("test",))
    hp = _small("irmv1", hidden_dim=13, steps=6, penalty_anneal_steps=2, penalty_weight=1e3)
    padded, plain = init_mlp([4], 13, False), init_mlp([4], 13, False, pad_to=1)
    assert padded.w2.shape == (1, 16, 16) and plain.w2.shape == (1, 13, 13)
    torch.testing.assert_close(padded.w2[:, :13, :13], plain.w2, rtol=0, atol=0)
    a = train_stacked(padded, train, test, hp, log_every=1)
    b = train_stacked(plain, train, test, hp, log_every=1)
    for p in (padded.w1[..., 13:], padded.b1[:, 13:], padded.w2[:, 13:], padded.w2[..., 13:],
              padded.b2[:, 13:], padded.w3[:, 13:]):  # fmt: skip
        assert p.abs().max() == 0
    torch.testing.assert_close(padded.w2[:, :13, :13], plain.w2, rtol=1e-5, atol=1e-6)
    assert a.final["test_risk"][0] == pytest.approx(b.final["test_risk"][0], rel=1e-5)


def test_anneal_setting_moves_the_step_where_lambda_applies():
    plan = build_plan({"preset": "paper", "anneal_steps": 0})
    irm = plan.jobs["irmv1"]
    assert irm.hparams.penalty_anneal_steps == 0
    assert irm.hparams_at(irm.point(PAPER_LAMBDA)).penalty_weight_at(0) == PAPER_LAMBDA
    default = build_plan({"preset": "paper"})
    assert {
        j.hparams.penalty_anneal_steps for j in default.jobs.values() if j.method == "irmv1"
    } == {190}
    assert default.jobs["erm"].hparams.penalty_anneal_steps == 0
