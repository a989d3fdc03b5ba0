"""Colored MNIST environments built from the real digits (irm_bench.envs.cmnist)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from irm_bench.envs.cmnist import data_seed, make_environments
from irm_bench.mnist import fetch_mnist, load_mnist_train


@pytest.fixture(scope="module")
def mnist_train(mnist_source, tmp_path_factory):
    cache = tmp_path_factory.mktemp("mnist")
    fetch_mnist(
        cache,
        local_source=mnist_source,
        names=["train-images-idx3-ubyte", "train-labels-idx1-ubyte"],
    )
    return load_mnist_train(cache)


@pytest.fixture(scope="module")
def envs(mnist_train):
    return make_environments(mnist_train, data_seed(0, 0))


def test_sizes_split_and_downsampling(mnist_train, envs):
    assert [len(envs[e]) for e in ("env1", "env2", "test")] == [25000, 25000, 10000]
    # env1 and env2 partition the first 50,000 images; test is the last 10,000, in order
    first = np.bincount(mnist_train.digits[:50000], minlength=10)
    both = np.bincount(torch.cat([envs["env1"].digits, envs["env2"].digits]).numpy(), minlength=10)
    np.testing.assert_array_equal(first, both)
    np.testing.assert_array_equal(envs["test"].digits.numpy(), mnist_train.digits[50000:])
    np.testing.assert_array_equal(envs["test"].gray.numpy(), mnist_train.images[50000:, ::2, ::2])


def test_colour_channel_holds_the_digit(envs):
    env = envs["env1"]
    images = env.images()
    assert images.shape == (25000, 2, 14, 14) and images.dtype == torch.float32
    idx = torch.arange(len(env))
    torch.testing.assert_close(images[idx, env.colours], env.gray.float() / 255.0, rtol=0, atol=0)
    assert images[idx, 1 - env.colours].abs().max() == 0
    assert images.min() >= 0.0 and images.max() <= 1.0


@pytest.mark.parametrize(("name", "agree"), [("env1", 0.8), ("env2", 0.9), ("test", 0.1)])
def test_environment_statistics(envs, name, agree):
    """P(colour = label) ≈ 1 - p_e and P(label = [digit < 5]) ≈ 0.75 (tolerance 0.01)."""
    env = envs[name]
    colour_agrees = (env.colours.float() == env.labels).float().mean().item()
    label_agrees = (env.labels == (env.digits < 5).float()).float().mean().item()
    assert abs(colour_agrees - agree) < 0.01
    assert abs(label_agrees - 0.75) < 0.01


def test_same_seed_bit_identical_different_seed_differs(mnist_train, envs):
    again = make_environments(mnist_train, data_seed(0, 0))
    other = make_environments(mnist_train, data_seed(0, 1))
    for name in ("env1", "env2", "test"):
        for field in ("gray", "digits", "labels", "colours"):
            assert torch.equal(getattr(envs[name], field), getattr(again[name], field))
        assert not torch.equal(envs[name].labels, other[name].labels)
        assert not torch.equal(envs[name].colours, other[name].colours)
    assert not torch.equal(envs["env1"].digits, other["env1"].digits)  # different shuffle
    assert data_seed(0, 0) != data_seed(1, 0)


def test_subsample_is_prefix(mnist_train, envs):
    small = make_environments(mnist_train, data_seed(0, 0), max_train_per_env=100)
    assert len(small["env1"]) == 100 and len(small["test"]) == 10000
    assert torch.equal(small["env2"].labels, envs["env2"].labels[:100])
