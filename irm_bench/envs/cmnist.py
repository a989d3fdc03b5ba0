"""Colored MNIST environments (IRM paper, Section 5.2), built from the real digits.

Construction, as the public reference code builds it
(facebookresearch/InvariantRiskMinimization, ``code/colored_mnist/main.py``):

- MNIST's *training* file only: the first 50,000 images for training, the last 10,000
  as the test environment (MNIST's own test file is not used for training or Table 1;
  model selection draws its validation sets from it, :func:`make_selection_environments`);
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
#: Environments added for model selection (:func:`make_selection_environments`): fresh
#: samples of env1's and env2's distributions, and the two parts of the test environment.
SELECTION_ENVS = ("env1_val", "env2_val", "test_holdout", "test_rest")
#: Images of the test environment (the last 10,000 of MNIST's training file).
N_TEST_IMAGES = 60_000 - N_TRAIN_IMAGES
#: Images of MNIST's t10k (test) file, unused by the paper's code.
N_T10K_IMAGES = 10_000


@dataclasses.dataclass(frozen=True)
class ColoredMnistEnv:
    """One Colored MNIST environment e.

    Attributes
    ----------
    name
        ``env1``, ``env2`` or ``test``; or a model-selection environment
        (:data:`SELECTION_ENVS`).
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
    name: str,
    images: torch.Tensor,
    digits: torch.Tensor,
    gen: torch.Generator,
    colour_flip: float | None = None,
) -> ColoredMnistEnv:
    n = digits.shape[0]
    p_e = COLOUR_FLIP[name] if colour_flip is None else colour_flip
    clean = (digits < 5).to(torch.float32)
    labels = _xor(clean, (torch.rand(n, generator=gen) < LABEL_NOISE).to(torch.float32))
    flips = (torch.rand(n, generator=gen) < p_e).to(torch.float32)
    colours = _xor(labels, flips).to(torch.int64)
    return ColoredMnistEnv(
        name=name,
        colour_flip=p_e,
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


def _subset(env: ColoredMnistEnv, name: str, index: torch.Tensor) -> ColoredMnistEnv:
    return dataclasses.replace(
        env,
        name=name,
        gray=env.gray[index],
        digits=env.digits[index],
        labels=env.labels[index],
        colours=env.colours[index],
    )


def validation_size(n_train: int, fraction: float) -> int:
    """Images of each training environment's validation set: ``round(fraction · n_train)``.

    Raises ``ValueError`` naming ``cmnist.selection.validation_fraction`` for a fraction
    outside (0, 1), or one whose two validation sets need more than the 10,000 t10k
    digits (any fraction above 0.2 with the full 25,000 images per environment).
    """
    key = "config key 'cmnist.selection.validation_fraction'"
    if not 0 < fraction < 1:
        raise ValueError(f"{key}: expected a number in (0, 1), found {fraction}")
    n_val = round(fraction * n_train)
    if n_val < 1 or len(TRAIN_ENVS) * n_val > N_T10K_IMAGES:
        raise ValueError(
            f"{key}: expected a fraction whose {len(TRAIN_ENVS)} validation sets "
            f"(round(fraction x {n_train}) each) fit in MNIST's {N_T10K_IMAGES} t10k digits "
            f"and hold >= 1 image, found {fraction} ({n_val} each)"
        )
    return n_val


def test_holdout_size(n_test: int, fraction: float) -> int:
    """Test-environment images held out for the test-domain oracle: ``round(fraction ·
    n_test)``, at least 1 and at most ``n_test - 1``."""
    return min(max(round(fraction * n_test), 1), n_test - 1)


def selection_split(
    seed: int, n_val: int, fraction: float, n_test: int = N_TEST_IMAGES
) -> dict[str, torch.Tensor]:
    """Index sets of the model-selection environments of one restart.

    ``env1_val`` and ``env2_val``: ``n_val`` disjoint indices each into MNIST's t10k
    file; ``test_holdout`` (``round(fraction · n_test)``, at least 1, never all) and
    ``test_rest`` (the others): a partition of the test environment's ``n_test`` rows.
    All four ``int64``, sorted. Drawn by a generator seeded from the restart's data
    seed ``seed`` alone (same seed, same split) and separate from
    :func:`make_environments`' generator, so the training data never change.
    """
    if 2 * n_val > N_T10K_IMAGES or n_val < 1:
        raise ValueError(f"need 1 <= 2 x n_val <= {N_T10K_IMAGES}, found n_val = {n_val}")
    gen = torch_generator(derive_seed(protocol=PROTOCOL, role="selection", data_seed=seed))
    digits = torch.randperm(N_T10K_IMAGES, generator=gen)
    rows = torch.randperm(n_test, generator=gen)
    k = test_holdout_size(n_test, fraction)
    parts = {
        "env1_val": digits[:n_val],
        "env2_val": digits[n_val : 2 * n_val],
        "test_holdout": rows[:k],
        "test_rest": rows[k:],
    }
    return {name: index.sort().values for name, index in parts.items()}


def make_selection_environments(
    t10k: MnistArrays, envs: dict[str, ColoredMnistEnv], seed: int, fraction: float
) -> dict[str, ColoredMnistEnv]:
    """The model-selection environments of one restart (:data:`SELECTION_ENVS`).

    ``env1_val`` / ``env2_val`` are fresh samples of env1's / env2's distributions:
    ``round(fraction · len(envs["env1"]))`` t10k digits each (5,000 for 0.2 of 25,000),
    label-noised (0.25) and coloured with that environment's colour-flip probability,
    exactly as :func:`make_environments` builds env1 / env2. ``test_holdout`` /
    ``test_rest`` split the test environment's rows (``fraction`` of them held out for
    the test-domain oracle). A deliberate choice: DomainBed holds out 20 % of each
    training environment, which would change the paper's training data (and Table 1);
    the paper's code leaves t10k unused, and samples of the same environment
    distribution drawn from it are statistically the same as a 20 % split of an i.i.d.
    environment.

    Parameters
    ----------
    t10k
        MNIST's t10k file (:func:`irm_bench.mnist.load_mnist_test`), 10,000 images.
    envs
        The restart's environments from :func:`make_environments` (sizes taken from it).
    seed
        The restart's data seed (:func:`data_seed`).
    fraction
        ``cmnist.selection.validation_fraction`` in (0, 1).

    Raises
    ------
    ValueError
        For a bad fraction (:func:`validation_size`) or a t10k without 10,000 images.
    """
    if t10k.images.shape != (N_T10K_IMAGES, 28, 28):
        raise ValueError(f"expected MNIST's 10,000 t10k images, got {t10k.images.shape}")
    n_val = validation_size(len(envs["env1"]), fraction)
    index = selection_split(seed, n_val, fraction, len(envs["test"]))
    images = torch.from_numpy(t10k.images)
    digits = torch.from_numpy(t10k.digits.astype("int64"))
    # own generator for the label / colour draws, in a fixed order (env1_val, env2_val)
    gen = torch_generator(derive_seed(protocol=PROTOCOL, role="selection-colour", data_seed=seed))
    out = {
        f"{name}_val": _make_env(
            f"{name}_val",
            images[index[f"{name}_val"]],
            digits[index[f"{name}_val"]],
            gen,
            colour_flip=COLOUR_FLIP[name],
        )
        for name in TRAIN_ENVS
    }
    for part in ("test_holdout", "test_rest"):
        out[part] = _subset(envs["test"], part, index[part])
    return out
