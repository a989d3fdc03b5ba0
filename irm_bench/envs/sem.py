"""The linear chain structural equation model of the IRM paper, Section 5.1.

Follows the public reference code (facebookresearch/InvariantRiskMinimization,
``code/experiment_synthetic/sem.py``), which we follow where the paper's text differs:

* identity weights ``W_xy = W_yz = I`` (the committed reference results use ``ones=1``);
* in partially observed setups the confounder weights ``W_hx, W_hy, W_hz`` are
  ``N(0, 1) / d`` with ``d`` the *total* number of features (10), not ``d / 2``;
* the scramble ``S`` is the ``Q`` factor of the QR decomposition of a standard Gaussian
  ``d x d`` matrix, applied on the right: observed inputs are ``[x, z] @ S``, so a
  coefficient vector ``w_hat`` fitted on scrambled inputs reads ``S @ w_hat`` in the
  unscrambled basis;
* the target is the sum of ``y``'s ``d / 2`` coordinates (the paper has a scalar Y), and
  ``x``, ``z`` and ``h`` have ``d / 2 = 5`` coordinates each (the paper's have 10);
* fully observed setups keep ``h`` with ``W_hx = I`` (the paper's text sets it to 0), so
  ``x`` has variance ``2 e²``;
* the letters E and O are the code's (``hetero=1`` is E), swapped relative to the paper's
  text, which calls ``σ_y² = e², σ_z² = 1`` O.

For a noise scale ``e`` and ``k = d / 2``::

    h = e * N(0, 1)^k                          (hidden confounder)
    x = h W_hx + e * N(0, 1)^k
    heteroskedastic Y (E):  y = x W_xy + h W_hy + e * N,   z = y W_yz + h W_hz + N
    homoskedastic Y (O):    y = x W_xy + h W_hy + N,       z = y W_yz + h W_hz + e * N

Every random number comes from the ``numpy.random.Generator`` handed in.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import numpy as np

SETUP_CODES: tuple[str, ...] = ("FOU", "FOS", "FEU", "FES", "POU", "POS", "PEU", "PES")


@dataclass(frozen=True)
class SEMSetup:
    """One of the paper's eight setups, e.g. ``PES``.

    Attributes
    ----------
    hidden
        Partially observed (``P``): a confounder acts on x, y and z with random weights.
        Fully observed (``F``): ``W_hx = I`` and ``W_hy = W_hz = 0``.
    hetero
        Heteroskedastic Y (``E``, reference flag ``hetero=1``): the environment scale
        multiplies y's noise; else (``O``) it multiplies z's noise.
    scramble
        Scrambled inputs (``S``): features are mixed by a random orthogonal matrix.
    """

    hidden: bool
    hetero: bool
    scramble: bool

    @property
    def code(self) -> str:
        """The three-letter setup code (``F``/``P``, ``E``/``O``, ``S``/``U``)."""
        return (
            ("P" if self.hidden else "F")
            + ("E" if self.hetero else "O")
            + ("S" if self.scramble else "U")
        )

    @classmethod
    def from_code(cls, code: str) -> SEMSetup:
        """Parse a setup code such as ``FOU``; raise ``ValueError`` naming the valid ones."""
        if code not in SETUP_CODES:
            hint = difflib.get_close_matches(str(code), SETUP_CODES, n=1)
            did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ValueError(
                f"unknown SEM setup {code!r}{did_you_mean}; known setups: {', '.join(SETUP_CODES)}"
            )
        return cls(hidden=code[0] == "P", hetero=code[1] == "E", scramble=code[2] == "S")


@dataclass(frozen=True, eq=False)
class ChainSEM:
    """One drawn chain SEM: its weights and scramble matrix (all float64).

    Attributes
    ----------
    setup
        The setup it was drawn for.
    w_hx, w_hy, w_hz, w_xy, w_yz
        ``(k, k)`` weight matrices, ``k = dim / 2``; rows index the cause.
    scramble
        ``(dim, dim)`` orthogonal matrix ``S`` (identity when unscrambled).
    """

    setup: SEMSetup
    w_hx: np.ndarray
    w_hy: np.ndarray
    w_hz: np.ndarray
    w_xy: np.ndarray
    w_yz: np.ndarray
    scramble: np.ndarray

    @property
    def dim(self) -> int:
        """Number of observed features ``d``."""
        return self.scramble.shape[0]

    @classmethod
    def draw(cls, setup: SEMSetup | str, dim: int, rng: np.random.Generator) -> ChainSEM:
        """Draw the weights (and scramble) of one SEM.

        Parameters
        ----------
        setup
            A :class:`SEMSetup` or its code.
        dim
            Total number of features ``d`` (even, >= 2): ``d/2`` causes and ``d/2`` effects.
        rng
            Source of every random number.
        """
        if isinstance(setup, str):
            setup = SEMSetup.from_code(setup)
        if dim < 2 or dim % 2:
            raise ValueError(f"SEM dim must be an even integer >= 2, found {dim}")
        k = dim // 2
        eye = np.eye(k)
        if setup.scramble:
            scramble, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        else:
            scramble = np.eye(dim)
        if setup.hidden:
            # The reference divides by the total dimension d, not by k = d / 2.
            w_hx, w_hy, w_hz = (rng.standard_normal((k, k)) / dim for _ in range(3))
        else:
            w_hx, w_hy, w_hz = eye, np.zeros((k, k)), np.zeros((k, k))
        return cls(setup, w_hx, w_hy, w_hz, eye.copy(), eye.copy(), scramble)

    def solution(self) -> np.ndarray:
        """The invariant (causal) coefficient vector in the unscrambled basis, ``(d,)``.

        ``[W_xy 1, 0]``: ones on the ``d/2`` causes, zeros on the ``d/2`` effects.
        """
        k = self.dim // 2
        return np.concatenate([self.w_xy.sum(axis=1), np.zeros(k)])

    def sample(
        self, n: int, env_scale: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` samples of environment ``e = env_scale``.

        Returns
        -------
        inputs
            ``(n, d)`` observed features ``[x, z] @ S``.
        target
            ``(n,)`` the sum of y's coordinates.
        """
        k = self.dim // 2
        e = float(env_scale)
        h = rng.standard_normal((n, k)) * e
        x = h @ self.w_hx + rng.standard_normal((n, k)) * e
        if self.setup.hetero:
            y = x @ self.w_xy + h @ self.w_hy + rng.standard_normal((n, k)) * e
            z = y @ self.w_yz + h @ self.w_hz + rng.standard_normal((n, k))
        else:
            y = x @ self.w_xy + h @ self.w_hy + rng.standard_normal((n, k))
            z = y @ self.w_yz + h @ self.w_hz + rng.standard_normal((n, k)) * e
        return np.concatenate([x, z], axis=1) @ self.scramble, y.sum(axis=1)


def causal_noncausal_errors(
    coefficients: np.ndarray, solution: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Causal and non-causal errors of coefficient vectors, as in the reference ``errors``.

    Parameters
    ----------
    coefficients
        ``(..., d)`` estimates in the *unscrambled* basis (``S @ w_hat``).
    solution
        ``(d,)`` true coefficients; causal coordinates are its non-zero entries.

    Returns
    -------
    causal, noncausal
        ``(...)`` mean squared error over the causal and over the non-causal coordinates
        (0 when a set is empty, as in the reference).
    """
    coefficients = np.asarray(coefficients, dtype=float)
    solution = np.asarray(solution, dtype=float)
    sq = (coefficients - solution) ** 2
    causal = solution != 0
    zeros = np.zeros(coefficients.shape[:-1])
    err_c = sq[..., causal].mean(axis=-1) if causal.any() else zeros
    err_n = sq[..., ~causal].mean(axis=-1) if (~causal).any() else zeros
    return err_c, err_n
