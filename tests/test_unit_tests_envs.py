"""The six unit-test generators against closed forms of their generating equations."""

from __future__ import annotations

import math

import pytest
import torch

from irm_bench.envs import ENVIRONMENTS, UNIT_TEST_TASKS, make_task
from irm_bench.seeds import torch_generator

N_LARGE = 200_000


def gen(seed: int) -> torch.Generator:
    return torch_generator(seed)


def pooled_sample(task, n: int, split: str, seed: int):
    samples = [task.sample(n, env, split, gen(seed + i)) for i, env in enumerate(task.envs)]
    xs, ys = zip(*samples, strict=True)
    return torch.cat(xs).double(), torch.cat(ys).double()


def lstsq(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.linalg.lstsq(x, y[:, None]).solution[:, 0]


def example1_erm_limit(task) -> torch.Tensor:
    """Population least-squares coefficients of target on (x, z), pooled over environments.

    Row-vector form: Cov(x) = s^2 I, Cov(y) = s^2 (W'W + I), Cov(z) = V' Cov(y) V + I,
    Cov(x, y) = s^2 W, Cov(x, z) = s^2 W V, Cov(y, z) = Cov(y) V, target t = y 1.
    """
    w, v = task.w_xy.double(), task.w_yz.double()
    k, d = task.dim_inv, task.dim
    ones = torch.ones(k, 1, dtype=torch.float64)
    cov_uu = torch.zeros(d, d, dtype=torch.float64)
    cov_ut = torch.zeros(d, 1, dtype=torch.float64)
    for s in task.scales:
        cyy = s**2 * (w.T @ w + torch.eye(k, dtype=torch.float64))
        cxz = s**2 * w @ v
        czz = v.T @ cyy @ v + torch.eye(task.dim_spu, dtype=torch.float64)
        cxx = s**2 * torch.eye(k, dtype=torch.float64)
        cov_uu += torch.cat([torch.cat([cxx, cxz], 1), torch.cat([cxz.T, czz], 1)])
        cov_ut += torch.cat([s**2 * w @ ones, v.T @ cyy @ ones])
    return torch.linalg.solve(cov_uu, cov_ut)[:, 0]


def test_registry_holds_the_six_tasks():
    assert list(UNIT_TEST_TASKS) == [
        "Example1",
        "Example1s",
        "Example2",
        "Example2s",
        "Example3",
        "Example3s",
    ]
    assert all(ENVIRONMENTS[name] is cls for name, cls in UNIT_TEST_TASKS.items())
    assert {cls.task for cls in UNIT_TEST_TASKS.values()} == {"regression", "classification"}


def test_example1_erm_coefficients_match_the_population_limit():
    task = make_task("Example1", 5, 5, 3, gen(1))
    x, y = pooled_sample(task, N_LARGE, "train", 10)
    expected = example1_erm_limit(task)
    assert expected[5:].abs().max() > 0.05  # ERM really leans on the spurious features
    torch.testing.assert_close(lstsq(x, y), expected, atol=0.02, rtol=0)


def test_example1_oracle_error_is_the_invariant_noise():
    # On the test split z is shuffled; the invariant predictor x W 1 leaves the noise
    # sigma_e * sum of dim_inv N(0, 1) draws, variance sigma_e^2 dim_inv.
    task = make_task("Example1", 5, 5, 3, gen(2))
    coef = torch.cat([task.w_xy.sum(1), torch.zeros(5)]).double()
    for i, (env, s) in enumerate(zip(task.envs, task.scales, strict=True)):
        x, y = task.sample(N_LARGE, env, "test", gen(20 + i))
        mse = ((x.double() @ coef - y.double()) ** 2).mean()
        assert mse.item() == pytest.approx(5 * s**2, rel=0.02)


def test_example2_label_and_background_agreement_rates():
    # P(label 1) = s_e; P(background sign agrees with the animal's) = p_e (the noise is
    # ~7 standard deviations smaller than the means, so signs follow the groups).
    task = make_task("Example2", 5, 5, 3, gen(3))
    for i, (env, (p, s)) in enumerate(zip(task.envs, task.ENV_CONSTANTS, strict=True)):
        x, y = task.sample(N_LARGE, env, "train", gen(30 + i))
        assert y.mean().item() == pytest.approx(s, abs=0.005)
        agree = ((x[:, 5:].sum(1) > 0).float() == y).float().mean()
        assert agree.item() == pytest.approx(p, abs=0.005)
        x_test, y_test = task.sample(N_LARGE, env, "test", gen(40 + i))
        agree_test = ((x_test[:, 5:].sum(1) > 0).float() == y_test).float().mean()
        # shuffled background: agreement = s P(bg+) + (1-s) P(bg-), P(bg+) = ps + (1-p)(1-s)
        bg_plus = p * s + (1 - p) * (1 - s)
        assert agree_test.item() == pytest.approx(s * bg_plus + (1 - s) * (1 - bg_plus), abs=0.005)


def test_example3_invariant_bayes_error_is_phi_minus_sqrt_dim_inv():
    # Class means +-0.1 per invariant coordinate, noise 0.1: the rule [sum(inv) < 0]
    # errs with probability Phi(-0.1 k / (0.1 sqrt k)) = Phi(-sqrt k).
    task = make_task("Example3", 5, 5, 3, gen(4))
    bayes = 0.5 * math.erfc(math.sqrt(5) / math.sqrt(2))
    for i, env in enumerate(task.envs):
        x, y = task.sample(N_LARGE, env, "test", gen(50 + i))
        error = ((x[:, :5].sum(1) < 0).float() != y).float().mean()
        assert error.item() == pytest.approx(bayes, abs=0.0015)
        x_train, y_train = task.sample(N_LARGE, env, "train", gen(60 + i))
        torch.testing.assert_close(
            x_train[y_train == 0, 5:].mean(0), task.spurious_means[i], atol=0.003, rtol=0
        )


@pytest.mark.parametrize("name", ["Example1", "Example2", "Example3"])
def test_scramble_is_orthogonal_and_keeps_the_oracle_error(name):
    plain = make_task(name, 5, 5, 3, gen(5))
    scrambled = make_task(f"{name}s", 5, 5, 3, gen(5))
    q = scrambled.scramble.double()
    torch.testing.assert_close(q.T @ q, torch.eye(10, dtype=torch.float64), atol=1e-6, rtol=0)
    assert (q - torch.eye(10, dtype=torch.float64)).abs().max() > 0.1
    x, y = pooled_sample(plain, 20_000, "test", 70)
    xs, ys = pooled_sample(scrambled, 20_000, "test", 70)
    torch.testing.assert_close(xs, (x.float() @ scrambled.scramble).double())
    torch.testing.assert_close(ys, y)
    # The oracle (least squares on the test split) predicts the same in either basis.
    ones = torch.ones(len(x), 1, dtype=torch.float64)
    fit = torch.cat([x, ones], 1) @ lstsq(torch.cat([x, ones], 1), y)
    fit_s = torch.cat([xs, ones], 1) @ lstsq(torch.cat([xs, ones], 1), ys)
    mse, mse_s = ((fit - y) ** 2).mean(), ((fit_s - ys) ** 2).mean()
    torch.testing.assert_close(mse_s, mse, rtol=1e-4, atol=0)


@pytest.mark.parametrize("name", list(UNIT_TEST_TASKS))
def test_same_seed_same_data_other_seed_other_data(name):
    def draw(task_seed: int, sample_seed: int):
        task = make_task(name, 5, 5, 3, gen(task_seed))
        return task.sample(100, "E1", "test", gen(sample_seed))

    x1, y1 = draw(0, 1)
    x2, y2 = draw(0, 1)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(draw(0, 2)[0], x1)
    assert x1.shape == (100, 10) and y1.shape == (100,)


def test_bad_dimensions_environments_and_names():
    with pytest.raises(ValueError, match="dim_inv must be an integer >= 1, found 0"):
        make_task("Example1", 0, 5, 3, gen(0))
    with pytest.raises(ValueError, match="dim_spu must be an integer >= 1, found -2"):
        make_task("Example3s", 5, -2, 3, gen(0))
    with pytest.raises(ValueError, match="n_envs must be <= 3"):
        make_task("Example2", 5, 5, 4, gen(0))
    with pytest.raises(KeyError, match="did you mean 'Example1'"):
        make_task("Exmple1", 5, 5, 3, gen(0))
    assert make_task("Example3", 5, 5, 6, gen(0)).envs[-1] == "E5"
