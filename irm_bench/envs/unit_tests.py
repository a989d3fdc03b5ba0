"""The six linear unit tests for invariance (Aubin et al. 2021, arXiv:2102.10867).

Example1 (regression), Example2 ("cows and camels", classification), Example3 (small
invariant margin, classification) and their scrambled versions Example1s/2s/3s, whose
inputs are multiplied by a fixed random orthogonal matrix. Constants and equations follow
the authors' code (facebookresearch/InvarianceUnitTests, ``scripts/datasets.py``):

* Example1, environment scale ``sigma_e`` in (0.1, 1.5, 2)::

      x ~ sigma_e N(0, I_inv),  y = x W_xy + sigma_e N(0, I_inv),  z = y W_yz + N(0, I_spu)
      target = sum_j y_j,  W_xy ~ N(0, 1) / dim_inv,  W_yz ~ N(0, 1) / dim_spu

* Example2, environment ``(p_e, s_e)`` in ((0.95, 0.3), (0.97, 0.5), (0.99, 0.7)): group
  ``i`` in 0..3 drawn with weights ``(p s, (1-p) s, p (1-s), (1-p)(1-s))``; the animal
  (invariant) mean is ``(+1, +1, -1, -1)[i]``, the background (spurious) mean
  ``(+1, -1, -1, +1)[i]`` (all coordinates); features ``(N(0, I)/sqrt(10) + mean)`` times
  0.01 (invariant) and 1 (spurious); label ``[sum of invariant features > 0]``;

* Example3, environment mean ``mu_e ~ N(0, I_spu)`` drawn at construction: n/2 examples of
  class 0 with invariant ``N(+0.1, 0.1^2 I)`` and spurious ``N(+mu_e, 0.1^2 I)``, then n/2
  of class 1 with the opposite means.

The ``test`` split shuffles the spurious features across the examples of an environment
(it breaks their correlation with the label); ``train`` and ``validation`` do not. The
scramble is the ``Q`` of the QR decomposition of a standard Gaussian ``d x d`` matrix,
applied on the right: ``inputs = [inv, spu] @ Q``.

Every random number comes from the ``torch.Generator`` handed in: constants (and the
scramble) from the constructor's, samples from ``sample``'s.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

#: Task types (the loss and the error follow from them, never from the labels).
TASKS = ("regression", "classification")


class UnitTestTask:
    """Base class: dimensions, environments and the scramble of one drawn task.

    Parameters
    ----------
    dim_inv, dim_spu
        Number of invariant and spurious features (``>= 1``).
    n_envs
        Number of environments (``2 <= n_envs <= max_envs``).
    generator
        Source of the task's constants (and of the scramble for scrambled tasks).
    scrambled
        Multiply inputs by a random orthogonal matrix (the ``s`` variants).

    Raises
    ------
    ValueError
        A dimension ``< 1`` or an environment count the task does not define.
    """

    name: ClassVar[str] = ""
    task: ClassVar[str] = ""
    #: Largest number of environments whose constants the authors' code writes down
    #: (``None``: any number, drawn at random).
    max_envs: ClassVar[int | None] = None

    def __init__(
        self,
        dim_inv: int,
        dim_spu: int,
        n_envs: int,
        generator: torch.Generator,
        scrambled: bool = False,
    ) -> None:
        for key, value in (("dim_inv", dim_inv), ("dim_spu", dim_spu)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{self.name}: {key} must be an integer >= 1, found {value!r}")
        if not isinstance(n_envs, int) or n_envs < 2:
            raise ValueError(f"{self.name}: n_envs must be an integer >= 2, found {n_envs!r}")
        if self.max_envs is not None and n_envs > self.max_envs:
            raise ValueError(
                f"{self.name}: n_envs must be <= {self.max_envs} (the environments it "
                f"defines), found {n_envs}"
            )
        self.dim_inv = dim_inv
        self.dim_spu = dim_spu
        self.dim = dim_inv + dim_spu
        self.n_envs = n_envs
        self.scrambled = scrambled
        self._draw_constants(generator)
        if scrambled:
            gauss = torch.randn(self.dim, self.dim, generator=generator)
            self.scramble = torch.linalg.qr(gauss).Q
        else:
            self.scramble = torch.eye(self.dim)

    @property
    def envs(self) -> tuple[str, ...]:
        """Environment names ``E0, E1, ...``."""
        return tuple(f"E{e}" for e in range(self.n_envs))

    def _draw_constants(self, generator: torch.Generator) -> None:
        raise NotImplementedError

    def _raw(self, n: int, env: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """``(invariant (n, dim_inv), spurious (n, dim_spu), target (n,))`` unscrambled."""
        raise NotImplementedError

    def sample(
        self, n: int, env: str, split: str, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` examples of environment ``env`` (``E0``...) and ``split``.

        Parameters
        ----------
        n
            Number of examples (Example3: rounded down to even, half per class).
        env
            Environment name, one of :attr:`envs`.
        split
            ``train``, ``validation`` (the same distribution) or ``test`` (spurious
            features shuffled across examples).
        generator
            Source of every random number of the sample.

        Returns
        -------
        inputs, target
            ``(n, dim)`` float32 (scrambled for ``s`` tasks) and ``(n,)`` float32
            (regression target, or labels in {0, 1}).
        """
        if env not in self.envs:
            raise ValueError(f"{self.name}: unknown environment {env!r}; known: {self.envs}")
        if split not in ("train", "validation", "test"):
            raise ValueError(f"unknown split {split!r}; known: train, validation, test")
        inv, spu, target = self._raw(n, int(env[1:]), generator)
        if split == "test":
            spu = spu[torch.randperm(spu.shape[0], generator=generator)]
        inputs = torch.cat([inv, spu], dim=-1) @ self.scramble
        return inputs, target


class Example1(UnitTestTask):
    """Cause and effect of a regression target with environment-dependent noise."""

    name = "Example1"
    task = "regression"
    max_envs = 3
    #: Environment scales sigma_e of the authors' code.
    SCALES: ClassVar[tuple[float, ...]] = (0.1, 1.5, 2.0)

    def _draw_constants(self, generator: torch.Generator) -> None:
        self.scales = self.SCALES[: self.n_envs]
        self.w_xy = torch.randn(self.dim_inv, self.dim_inv, generator=generator) / self.dim_inv
        self.w_yz = torch.randn(self.dim_inv, self.dim_spu, generator=generator) / self.dim_spu

    def _raw(self, n: int, env: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        sigma = self.scales[env]
        x = torch.randn(n, self.dim_inv, generator=generator) * sigma
        y = x @ self.w_xy + torch.randn(n, self.dim_inv, generator=generator) * sigma
        z = y @ self.w_yz + torch.randn(n, self.dim_spu, generator=generator)
        return x, z, y.sum(-1)


class Example2(UnitTestTask):
    """Cows and camels: a weak invariant signal and a strong, mostly agreeing background."""

    name = "Example2"
    task = "classification"
    max_envs = 3
    #: ``(p_e, s_e)`` of the authors' code: p = P(background agrees with the animal),
    #: s = P(label 1).
    ENV_CONSTANTS: ClassVar[tuple[tuple[float, float], ...]] = (
        (0.95, 0.3),
        (0.97, 0.5),
        (0.99, 0.7),
    )
    SNR_FG: ClassVar[float] = 1e-2
    SNR_BG: ClassVar[float] = 1.0

    def _draw_constants(self, generator: torch.Generator) -> None:
        self.constants = self.ENV_CONSTANTS[: self.n_envs]
        self.fg_sign = torch.tensor([1.0, 1.0, -1.0, -1.0])
        self.bg_sign = torch.tensor([1.0, -1.0, -1.0, 1.0])

    def group_weights(self, env: int) -> torch.Tensor:
        """``(4,)`` probabilities of the groups (cow/grass, cow/sand, camel/sand, camel/grass)."""
        p, s = self.constants[env]
        return torch.tensor([p * s, (1 - p) * s, p * (1 - s), (1 - p) * (1 - s)])

    def _raw(self, n: int, env: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        weights = self.group_weights(env)
        group = torch.multinomial(weights, n, replacement=True, generator=generator)
        noise_fg = torch.randn(n, self.dim_inv, generator=generator) / math.sqrt(10)
        noise_bg = torch.randn(n, self.dim_spu, generator=generator) / math.sqrt(10)
        inv = (noise_fg + self.fg_sign[group, None]) * self.SNR_FG
        spu = (noise_bg + self.bg_sign[group, None]) * self.SNR_BG
        return inv, spu, (inv.sum(-1) > 0).float()


class Example3(UnitTestTask):
    """Small invariant margin (0.1) versus a large, environment-specific spurious one."""

    name = "Example3"
    task = "classification"
    max_envs = None
    SEPARATION: ClassVar[float] = 0.1
    NOISE: ClassVar[float] = 0.1

    def _draw_constants(self, generator: torch.Generator) -> None:
        self.spurious_means = torch.randn(self.n_envs, self.dim_spu, generator=generator)

    def _raw(self, n: int, env: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        m = n // 2
        sign = torch.cat([torch.ones(m), -torch.ones(m)])[:, None]
        inv = torch.randn(2 * m, self.dim_inv, generator=generator) * self.NOISE
        spu = torch.randn(2 * m, self.dim_spu, generator=generator) * self.NOISE
        inv = inv + sign * self.SEPARATION
        spu = spu + sign * self.spurious_means[env]
        return inv, spu, torch.cat([torch.zeros(m), torch.ones(m)])


class _Scrambled:
    """Mixin: the ``s`` variant of a task (same constants, then the scramble drawn)."""

    def __init__(
        self, dim_inv: int, dim_spu: int, n_envs: int, generator: torch.Generator
    ) -> None:
        super().__init__(dim_inv, dim_spu, n_envs, generator, scrambled=True)


class Example1s(_Scrambled, Example1):
    """Example1 with inputs multiplied by a random orthogonal matrix."""

    name = "Example1s"


class Example2s(_Scrambled, Example2):
    """Example2 with inputs multiplied by a random orthogonal matrix."""

    name = "Example2s"


class Example3s(_Scrambled, Example3):
    """Example3 with inputs multiplied by a random orthogonal matrix."""

    name = "Example3s"


#: The six tasks by name, in the paper's order.
UNIT_TEST_TASKS: dict[str, type[UnitTestTask]] = {
    cls.name: cls for cls in (Example1, Example1s, Example2, Example2s, Example3, Example3s)
}


def make_task(
    name: str, dim_inv: int, dim_spu: int, n_envs: int, generator: torch.Generator
) -> UnitTestTask:
    """Build task ``name`` (``Example1`` ... ``Example3s``); unknown names list the known."""
    from irm_bench.registry import lookup

    return lookup(UNIT_TEST_TASKS, name, "unit-test task")(dim_inv, dim_spu, n_envs, generator)
