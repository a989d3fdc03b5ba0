"""The two-environment minimal example of the IRM paper's appendix.

For an environment scale ``e``::

    x ~ N(0, e^2)^2,   y = x + N(0, e^2)^2,   z = y + N(0, 1)^2

Features are ``(x, z)`` in R^4 and the target is the sum of y's two coordinates. The
invariant predictor puts weight 1 on each x coordinate and 0 on each z coordinate; the
z coordinates predict y better in low-noise environments, which is the spurious pull.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: The invariant coefficients over (x1, x2, z1, z2).
INVARIANT_SOLUTION = (1.0, 1.0, 0.0, 0.0)
FEATURE_NAMES = ("x1", "x2", "z1", "z2")


@dataclass(frozen=True)
class MinimalExample:
    """The appendix's data generator; ``k`` is the dimension of x, y and z (2)."""

    k: int = 2

    def sample(
        self, n: int, env_scale: float, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` samples of environment ``e = env_scale`` (float32).

        Returns
        -------
        features
            ``(n, 2k)`` the concatenation ``[x, z]``.
        target
            ``(n,)`` the sum of y's coordinates.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, found {n}")
        e = float(env_scale)
        shape = (n, self.k)
        x = torch.randn(shape, generator=generator) * e
        y = x + torch.randn(shape, generator=generator) * e
        z = y + torch.randn(shape, generator=generator)
        return torch.cat([x, z], dim=1), y.sum(dim=1)
