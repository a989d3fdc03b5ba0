"""The contract shared by the linear SEM methods.

Every method fits a batch of SEM draws at once from their per-environment moments
(:class:`~irm_bench.envs.moments.LinearMoments` with a leading draw axis) and returns a
:class:`LinearFit`. Gradient methods also train a grid of hyper-parameters and select
one grid point per draw; closed-form methods (ERM, ICP) have a one-point grid.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from irm_bench.envs.moments import LinearMoments


@dataclass(frozen=True, eq=False)
class LinearFit:
    """Coefficients fitted on a batch of ``D`` draws over a grid of ``G`` settings.

    Attributes
    ----------
    coefficients
        ``(D, G, d)`` coefficients in the *observed* (possibly scrambled) basis; NaN where
        a fit diverged.
    grid
        ``G`` grid values (IRMv1's ``reg``); ``(None,)`` for methods without a grid.
    selected
        ``(D,)`` index of the selected grid point per draw, ``-1`` when none is usable.
    diverged
        ``(D, G)`` the fit produced non-finite parameters and was stopped.
    diverged_step
        ``(D, G)`` step at which divergence was detected, ``-1`` if it did not diverge.
    hparam
        Name of the swept hyper-parameter (``lambda``, ``eta``); ``""`` without a grid.
    grid_columns
        Per grid point values for the result tables, ``G`` each: ``hparam``'s values and
        any others the method reports (IRMv1: ``reg`` and ``lambda``).
    """

    coefficients: np.ndarray
    grid: tuple[float | None, ...]
    selected: np.ndarray
    diverged: np.ndarray
    diverged_step: np.ndarray
    hparam: str = ""
    grid_columns: Mapping[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)

    @classmethod
    def single(cls, coefficients: np.ndarray) -> LinearFit:
        """Wrap ``(D, d)`` closed-form coefficients as a one-point grid."""
        n_draws = coefficients.shape[0]
        return cls(
            coefficients=coefficients[:, None, :],
            grid=(None,),
            selected=np.zeros(n_draws, dtype=int),
            diverged=np.zeros((n_draws, 1), dtype=bool),
            diverged_step=np.full((n_draws, 1), -1),
        )


class LinearMethod(Protocol):
    """What every SEM method implements."""

    name: str

    def fit(
        self,
        moments: LinearMoments,
        halves: tuple[LinearMoments, LinearMoments] | None = None,
    ) -> LinearFit:
        """Fit every draw of ``moments`` (leading axis ``D``, environments ``E``).

        ``halves`` holds the moments of the even- and odd-indexed samples, needed only by
        the split IRMv1 penalty estimator.
        """
        ...


def hparams_from_mapping(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """Build the frozen dataclass ``cls`` from a mapping; unknown keys are an error.

    The error names the key (``where.key``), suggests a close match and lists the
    accepted keys.
    """
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in known]
    if unknown:
        key = unknown[0]
        hint = difflib.get_close_matches(key, known, n=1)
        did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise ValueError(
            f"unknown key '{where}.{key}'{did_you_mean}; accepted: {', '.join(known)}"
        )
    return cls(**values)


def solve_masked(xx: np.ndarray, xy: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Least squares restricted to feature subsets, from moments (float64).

    Parameters
    ----------
    xx, xy
        ``(..., d, d)`` and ``(..., d)`` pooled ``X'X/n`` and ``X'y/n``.
    masks
        ``(..., K, d)`` bool: the features each of ``K`` fits may use.

    Returns
    -------
    np.ndarray
        ``(..., K, d)`` coefficients, exactly zero outside each mask. Off-mask rows and
        columns are replaced by the identity so that one batched solve does every subset.
    """
    m = masks.astype(np.float64)
    pair = m[..., :, None] * m[..., None, :]
    eye = np.eye(xx.shape[-1])
    a = xx[..., None, :, :] * pair + eye * (1.0 - m)[..., None, :]
    return np.linalg.solve(a, (xy[..., None, :] * m)[..., None])[..., 0]
