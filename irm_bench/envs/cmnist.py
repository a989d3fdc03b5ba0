"""Colored MNIST environments (IRM paper, Section 5.2), built from the real digits.

Construction, as the public reference code builds it
(facebookresearch/InvariantRiskMinimization, ``code/colored_mnist/main.py``):

- MNIST's *training* file only: the first 50,000 images for training, the last 10,000
  as the test environment (MNIST's own test file is not used);
- per restart, the 50,000 training images are shuffled; the even-indexed half is
  environment 1 (colour-flip probability 0.2), the odd-indexed half environment 2 (0.1);
  the test environment uses 0.9;
- images downsampled 28x28 -> 14x14 by keeping every second row and column;
- label y = [digit < 5], flipped with probability 0.25; *then* the colour is drawn as
  colour = y XOR Bernoulli(p_e);
- two channels: channel ``colour`` keeps the digit, the other is zero; pixels / 255.

Every draw comes from one ``torch.Generator`` seeded with the restart's data seed, in a
fixed order (shuffle; then per environment: label flips, colour flips), so the same seed
gives bit-identical tensors on any machine.
"""

from __future__ import annotations

import dataclasses

import torch

from irm_bench.mnist import MnistArrays
from irm_bench.seeds import derive_seed, torch_generator

PROTOCOL = "irm-paper-cmnist"
#: Images of MNIST's training file used for the training environments.
N_TRAIN_IMAGES = 50_000
#: Probability that the binary label disagrees with [digit < 5].
LABEL_NOISE = 0.25
#: Colour-flip probability p_e of each environment, in construction order.
COLOUR_FLIP = {"env1": 0.2, "env2": 0.1, "test": 0.9}
TRAIN_ENVS = ("env1", "env2")


@dataclasses.dataclass(frozen=True)
class ColoredMnistEnv:
    """One Colored MNIST environment e.

    Attributes
    ----------
    name
        ``env1``, ``env2`` or ``test``.
    colour_flip
        p_e, the probability that the colour disagrees with the (noisy) label.
    gray
        ``uint8`` tensor ``(n, 14, 14)``: the downsampled digit, 0..255.
    digits
        ``int64`` tensor ``(n,)``: the original digit 0..9.
    labels
        ``float32`` tensor ``(n,)`` in {0, 1}: [digit < 5] after label noise.
    colours
        ``int64`` tensor ``(n,)`` in {0, 1}: the channel that holds the digit.
    """

    name: str
    colour_flip: float
    gray: torch.Tensor
    digits: torch.Tensor
    labels: torch.Tensor
    colours: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def images(self) -> torch.Tensor:
        """The two-channel images, ``float32 (n, 2, 14, 14)`` in [0, 1].

        Channel ``colours[i]`` holds image i's digit and the other channel is zero.
        """
        gray = self.gray.to(torch.float32) / 255.0
        out = torch.zeros(len(self), 2, 14, 14)
        out[torch.arange(len(self)), self.colours] = gray
        return out


def data_seed(base_seed: int, restart: int) -> int:
    """Seed of restart ``restart``'s environments (shared by every method and λ)."""
    return derive_seed(protocol=PROTOCOL, role="data", restart=restart, seed=base_seed)


def _xor(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a != b).to(a.dtype)


def _make_env(
    name: str, images: torch.Tensor, digits: torch.Tensor, gen: torch.Generator
) -> ColoredMnistEnv:
    n = digits.shape[0]
    clean = (digits < 5).to(torch.float32)
    labels = _xor(clean, (torch.rand(n, generator=gen) < LABEL_NOISE).to(torch.float32))
    flips = (torch.rand(n, generator=gen) < COLOUR_FLIP[name]).to(torch.float32)
    colours = _xor(labels, flips).to(torch.int64)
    return ColoredMnistEnv(
        name=name,
        colour_flip=COLOUR_FLIP[name],
        gray=images[:, ::2, ::2].contiguous(),
        digits=digits.to(torch.int64),
        labels=labels,
        colours=colours,
    )


def make_environments(
    mnist: MnistArrays, seed: int, *, max_train_per_env: int | None = None
) -> dict[str, ColoredMnistEnv]:
    """Build the three Colored MNIST environments of one restart.

    Parameters
    ----------
    mnist
        MNIST's training file (60,000 images), e.g. from
        :func:`irm_bench.mnist.load_mnist_train`.
    seed
        The restart's data seed (:func:`data_seed`).
    max_train_per_env
        Keep only the first this many images of each training environment (smoke tests;
        ``None`` keeps all 25,000). The draws are made for the full set first, so a
        subsample is a prefix of the full environment.

    Returns
    -------
    dict
        ``{"env1": ..., "env2": ..., "test": ...}`` with 25,000 / 25,000 / 10,000 images.

    Raises
    ------
    ValueError
        If MNIST has fewer than 60,000 images or ``max_train_per_env`` is not positive.
    """
    if mnist.images.shape[0] < 60_000 or mnist.images.shape[1:] != (28, 28):
        raise ValueError(f"expected MNIST's 60,000 training images, got {mnist.images.shape}")
    if max_train_per_env is not None and max_train_per_env < 1:
        raise ValueError(f"max_train_per_env must be positive, got {max_train_per_env}")
    images = torch.from_numpy(mnist.images[:60_000])
    digits = torch.from_numpy(mnist.digits[:60_000].astype("int64"))
    gen = torch_generator(seed)
    perm = torch.randperm(N_TRAIN_IMAGES, generator=gen)
    train_images, train_digits = images[:N_TRAIN_IMAGES][perm], digits[:N_TRAIN_IMAGES][perm]
    envs = {
        "env1": _make_env("env1", train_images[0::2], train_digits[0::2], gen),
        "env2": _make_env("env2", train_images[1::2], train_digits[1::2], gen),
        "test": _make_env("test", images[N_TRAIN_IMAGES:], digits[N_TRAIN_IMAGES:], gen),
    }
    if max_train_per_env is not None:
        for name in TRAIN_ENVS:
            env = envs[name]
            k = max_train_per_env
            envs[name] = dataclasses.replace(
                env,
                gray=env.gray[:k],
                digits=env.digits[:k],
                labels=env.labels[:k],
                colours=env.colours[:k],
            )
    return envs
