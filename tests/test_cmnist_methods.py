"""Every registered method in the Colored MNIST trainer: Fishr's gradient variances,
the step of each method against a one-model autograd reference, the gray test
environment, a toy method registered in a test, and config errors naming the key.

Values come from torch.func per-sample gradients, autograd on a plain nn.Linear MLP
(:mod:`irm_bench.cmnist.reference`) or a direct two-channel forward pass, never from
the closed forms tested.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
import yaml

from irm_bench.cmnist.model import env_metrics, init_mlp, pack_envs, packed_grad_variance
from irm_bench.cmnist.presets import IRM_SETUP, MethodHparams, build_plan
from irm_bench.cmnist.reference import ReferenceMLP, reference_loss
from irm_bench.cmnist.train import step_objective, train_stacked
from irm_bench.config import ConfigError, validate_config
from irm_bench.envs.cmnist import COLOUR_FLIP, TRAIN_ENVS, ColoredMnistEnv
from irm_bench.methods import METHODS, methods_for
from irm_bench.methods.contract import EnvStats, MethodSpec, ObjectiveTerms
from irm_bench.methods.groupdro import GroupDROHparams

REPO = Path(__file__).resolve().parent.parent


def _env(name: str, n: int, gen: torch.Generator) -> ColoredMnistEnv:
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


def _envs(seed: int, n: int = 48) -> dict[str, ColoredMnistEnv]:
    gen = torch.Generator().manual_seed(seed)
    return {name: _env(name, n + 5 * i, gen) for i, name in enumerate(("env1", "env2", "test"))}


def _hp(method: str, **changes: Any) -> MethodHparams:
    base = dataclasses.replace(IRM_SETUP, method=method, hidden_dim=12, penalty_anneal_steps=0)
    if not METHODS[method].penalised:
        base = dataclasses.replace(base, penalty_weight=0.0)
    return dataclasses.replace(base, **changes)


def _grads_per_example(w: torch.Tensor, b: torch.Tensor, h: torch.Tensor, y: torch.Tensor):
    """Per-example gradients of BCE in the last layer (w, b), by torch.func."""

    def loss(w_, b_, h_, y_):
        return F.binary_cross_entropy_with_logits(h_ @ w_ + b_, y_)

    gw, gb = torch.func.vmap(torch.func.grad(loss, argnums=(0, 1)), in_dims=(None, None, 0, 0))(
        w, b, h, y
    )
    return torch.cat([gw, gb[:, None]], dim=1)


def test_trainer_grad_variance_matches_torch_func_per_sample_gradients():
    """(R, E, h + 1) variances of the stacked trainer == torch.func on each restart's MLP."""
    per_restart = [_envs(1), _envs(2)]
    packed = pack_envs(per_restart, TRAIN_ENVS)
    model = init_mlp([3, 4], 12, grayscale=False, pad_to=1)
    model.b3 = torch.tensor([0.3, -0.2])
    logits, features = model.logits_and_features(packed.x)
    ours = packed_grad_variance(logits, features, packed)
    assert ours.shape == (2, 2, 13)
    for r, envs in enumerate(per_restart):
        ref = ReferenceMLP(model, r)
        for e, name in enumerate(TRAIN_ENVS):
            h = ref.features(envs[name].images()).detach()
            g = _grads_per_example(model.w3[r, :, 0], model.b3[r], h, envs[name].labels)
            expected = g.var(0, unbiased=False)  # centred on the environment's mean
            torch.testing.assert_close(ours[r, e], expected, rtol=1e-4, atol=1e-7)


def _as_reference(grads, ref_grads, r):
    transposed = (True, False, True, False, True, False)  # nn.Linear stores (out, in)
    return [
        (g[r].reshape(rg.shape[::-1] if t else rg.shape), rg.T if t else rg)
        for g, rg, t in zip(grads, ref_grads, transposed, strict=True)
    ]


@pytest.mark.parametrize("method", sorted(methods_for("cmnist")))
@pytest.mark.parametrize("step", [0, 3])  # λ_t = 1 (anneal) and λ_t = λ (divided)
def test_step_matches_one_model_autograd_reference(method, step):
    """Loss and gradients of the batched step == the one-model autograd reference."""
    per_restart = [_envs(5), _envs(6)]
    packed = pack_envs(per_restart, TRAIN_ENVS)
    hp = _hp(method, penalty_weight=1e3 if METHODS[method].penalised else 0.0)
    hp = dataclasses.replace(hp, penalty_anneal_steps=2)
    model = init_mlp([21, 22], hp.hidden_dim, False)
    for p in model.parameters():
        p.requires_grad_(True)
    # a state as after earlier steps (GroupDRO's weights), the same for both
    state = torch.tensor([[0.3, 0.7], [0.6, 0.4]]) if method == "groupdro" else None
    ours, _, _ = step_objective(model, packed, hp, step, state)
    grads = torch.autograd.grad(ours.sum(), model.parameters())
    for r, envs in enumerate(per_restart):
        ref = ReferenceMLP(model, r)
        ref_state = state[r : r + 1] if state is not None else None
        ref_loss = reference_loss(ref, [envs[e] for e in TRAIN_ENVS], hp, step, ref_state)
        assert ours[r].item() == pytest.approx(ref_loss.item(), rel=1e-5)
        ref_grads = torch.autograd.grad(ref_loss, list(ref.parameters()))
        for ours_g, ref_g in _as_reference(grads, ref_grads, r):
            torch.testing.assert_close(ours_g, ref_g, rtol=1e-4, atol=1e-6)


def test_vrex_and_fishr_reference_penalties_are_the_published_formulas():
    """The reference loss minus its risk part is (R1 - R2)^2 for V-REx (Fishr code)."""
    envs = _envs(7)
    model = init_mlp([8], 12, False)
    ref = ReferenceMLP(model, 0)
    train = [envs[e] for e in TRAIN_ENVS]
    risks = [F.binary_cross_entropy_with_logits(ref(e.images()), e.labels) for e in train]
    hp_vrex = _hp("vrex", penalty_weight=1.0, l2_weight=0.0)
    expected = (risks[0] + risks[1]) / 2 + (risks[0] - risks[1]) ** 2
    assert reference_loss(ref, train, hp_vrex, 5).item() == pytest.approx(expected.item(), 1e-6)


def test_gray_test_accuracy_matches_a_two_channel_gray_forward_pass():
    """Both-channel scoring of the colour-split test pack == a forward pass on images with
    the digit in both channels (for the colour model and the channel-summing oracle)."""
    per_restart = [_envs(9), _envs(10)]
    test = pack_envs(per_restart, ("test",))
    for grayscale in (False, True):
        model = init_mlp([1, 2], 12, grayscale)
        ours = env_metrics(model.logits(test.x, both_channels=True), test, with_grad=False)
        for r, envs in enumerate(per_restart):
            env = envs["test"]
            digit = env.gray.to(torch.float32) / 255.0
            gray_images = torch.stack([digit, digit], dim=1)  # (n, 2, 14, 14)
            logits = ReferenceMLP(model, r)(gray_images)
            acc = ((logits > 0).float() == env.labels).float().mean()
            risk = F.binary_cross_entropy_with_logits(logits, env.labels)
            assert ours.accuracy[r, 0].item() == pytest.approx(acc.item(), abs=1e-6)
            assert ours.risk[r, 0].item() == pytest.approx(risk.item(), rel=1e-5)


def test_gray_test_is_reported_for_every_method():
    per_restart = [_envs(11)]
    train, test = pack_envs(per_restart, TRAIN_ENVS), pack_envs(per_restart, ("test",))
    for method in methods_for("cmnist"):
        result = train_stacked(
            init_mlp([1], 12, False), train, test, _hp(method, steps=3), log_every=1
        )
        assert 0.0 <= result.final["gray_test_accuracy"][0] <= 1.0
        assert set(result.curves["environment"]) == {"env1", "env2", "test", "gray_test"}


def _toy_objective(stats: EnvStats, hparams: Any, state: Any) -> ObjectiveTerms:
    """Module-local toy penalty: the largest training risk (a worst-case penalty)."""
    return ObjectiveTerms(risk_term=stats.risks.mean(-1), penalty=stats.risks.max(-1).values)


TOY = MethodSpec(
    name="toy",
    label="Toy",
    colour="#000000",
    studies=frozenset({"cmnist"}),
    objective=_toy_objective,
    penalised=True,
)


def _default_config() -> dict[str, Any]:
    with open(REPO / "config.yaml") as fh:
        return yaml.safe_load(fh)


def test_toy_method_registered_in_a_test_runs_through_config_plan_and_trainer(monkeypatch):
    monkeypatch.setitem(METHODS, "toy", TOY)
    config = copy.deepcopy(_default_config())
    config["cmnist"].update(preset="smoke", methods=["erm", "toy"])
    cmnist = validate_config(config, check_paths=False)["cmnist"]
    plan = build_plan(cmnist)
    job = plan.jobs["toy"]
    assert job.hparams.method == "toy" and job.hparams.penalty_weight > 0  # IRM setup
    per_restart = [_envs(12)]
    train, test = pack_envs(per_restart, TRAIN_ENVS), pack_envs(per_restart, ("test",))
    hp = dataclasses.replace(job.hparams, hidden_dim=12, steps=4, penalty_anneal_steps=2)
    result = train_stacked(init_mlp([1], 12, False), train, test, hp, log_every=1)
    assert not result.diverged.any()
    # the toy penalty changed training: λ · max risk at step >= 2
    plain = dataclasses.replace(hp, method="erm", penalty_weight=0.0, penalty_anneal_steps=0)
    other = train_stacked(init_mlp([1], 12, False), train, test, plain, log_every=1)
    assert result.final["env1_risk"][0] != other.final["env1_risk"][0]


@pytest.mark.parametrize(
    ("patch", "key", "phrase"),
    [
        ({"methods": ["erm", "icp"]}, "cmnist.methods[1]", "'icp' cannot run in the cmnist"),
        ({"methods": ["vrx"]}, "cmnist.methods[0]", "did you mean 'vrex'?"),
        ({"groupdro": {"eta": 0}}, "cmnist.groupdro.eta", "a number > 0"),
        ({"groupdro": {"eta": -0.5}}, "cmnist.groupdro.eta", "a number > 0"),
        ({"groupdro": {"step": 0.1}}, "cmnist.groupdro.step", "expected one of eta"),
    ],
)
def test_bad_method_config_names_the_key(patch, key, phrase):
    config = copy.deepcopy(_default_config())
    config["cmnist"].update(patch)
    with pytest.raises(ConfigError) as info:
        validate_config(config, check_paths=False)
    lines = [ln for ln in str(info.value).splitlines() if f"config key '{key}'" in ln]
    assert lines and phrase in lines[0], str(info.value)
    assert len(str(info.value).splitlines()) == 2  # one line for one bad value


def test_groupdro_eta_reaches_the_trainer_and_matches_the_dataclass_schema():
    config = copy.deepcopy(_default_config())
    config["cmnist"].update(methods=["groupdro"], groupdro={"eta": 0.5})
    plan = build_plan(validate_config(config, check_paths=False)["cmnist"])
    assert plan.jobs["groupdro"].hparams.spec_hparams() == GroupDROHparams(eta=0.5)
    assert plan.jobs["groupdro"].hparams.penalty_weight == 0.0  # no penalty, no division
    with open(REPO / "workflow/schemas/config.schema.yaml") as fh:
        schema = yaml.safe_load(fh)
    block = schema["properties"]["cmnist"]["properties"]["groupdro"]["properties"]
    assert set(block) == {f.name for f in dataclasses.fields(GroupDROHparams)}
    assert block["eta"]["default"] == GroupDROHparams().eta
