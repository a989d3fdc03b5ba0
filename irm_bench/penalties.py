"""The IRMv1 penalty, its estimators, and its closed-form gradient for linear models.

IRMv1 (Arjovsky et al. 2019, Section 3.1, eq. IRMv1) penalises, per environment e, the
squared gradient of the risk with respect to a fixed dummy classifier ``w``:

    P_e(Phi) = || grad_{w | w=w0} R_e(w o Phi) ||^2 .

Two estimators of ``P_e`` are registered:

``squared``
    the full-batch squared gradient, ``mean_j (dR_e/dw_j)^2`` (the reference SEM code
    takes the mean over the coordinates j of w, not the sum);
``split``
    the unbiased estimator of the paper's appendix: the gradient on one half of the
    samples times the gradient on the other half, ``mean_j g_j^(1) g_j^(2)``, halves being
    the even- and odd-indexed samples (after a fresh permutation when the caller
    shuffles). It can be negative and is never clamped.

For the linear SEM model ``f(x) = x Phi w`` with ``w = 1`` (the reference's fixed
``ones(d, 1)``) and squared error, with ``Sigma = X'X/n``, ``c = X'y/n``, ``v = Phi 1``:

    R_e = v' Sigma v - 2 c' v + y'y/n,         r = dR_e/dv = 2 (Sigma v - c),
    g   = dR_e/dw = Phi' r,                    dR_e/dPhi = r 1',
    P^(a,b) = g_a' g_b / d,
    dP^(a,b)/dPhi = (r_a g_b' + r_b g_a' + 2 (Sigma_a Phi g_b + Sigma_b Phi g_a) 1') / d,

where ``a`` and ``b`` are the two halves (both the full batch for ``squared``). These
closed forms are what :class:`LinearIRMv1Gradient` evaluates for a whole batch of models
at once; tests check them against autograd and finite differences.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from irm_bench.registry import lookup


@dataclass(frozen=True)
class PenaltyEstimator:
    """An estimator of the IRMv1 penalty from two (possibly equal) sample halves.

    Attributes
    ----------
    name
        Registry key.
    first, second
        Which rows give the two gradients: ``all``, ``even`` or ``odd``.
    """

    name: str
    first: str
    second: str

    @property
    def is_squared(self) -> bool:
        """Both gradients come from the same rows (a square, hence >= 0)."""
        return self.first == self.second


PENALTY_ESTIMATORS: dict[str, PenaltyEstimator] = {
    "squared": PenaltyEstimator("squared", "all", "all"),
    "split": PenaltyEstimator("split", "even", "odd"),
}


def get_penalty_estimator(name: str) -> PenaltyEstimator:
    """Look up a penalty estimator; the error lists the known names."""
    return lookup(PENALTY_ESTIMATORS, name, "IRMv1 penalty estimator")


def _rows(tensor: torch.Tensor, rows: str) -> torch.Tensor:
    return {"all": tensor, "even": tensor[0::2], "odd": tensor[1::2]}[rows]


def dummy_scale_penalty(
    predictions: torch.Tensor,
    target: torch.Tensor,
    estimator: PenaltyEstimator | str = "squared",
) -> torch.Tensor:
    """IRMv1 penalty of squared error with a dummy scalar classifier ``w = 1``.

    ``R(w) = mean (w * f - y)^2``; the penalty uses ``dR/dw`` at ``w = 1`` on the
    estimator's halves (rows in the order given: shuffle before calling for a fresh
    split). Differentiable (``create_graph=True``) with respect to whatever produced
    ``predictions``.

    Parameters
    ----------
    predictions, target
        ``(n,)`` model outputs ``f`` and targets ``y`` of one environment.
    estimator
        A :class:`PenaltyEstimator` or its name.

    Returns
    -------
    torch.Tensor
        Scalar penalty (may be negative for ``split``).
    """
    if isinstance(estimator, str):
        estimator = get_penalty_estimator(estimator)
    scale = torch.ones((), dtype=predictions.dtype, device=predictions.device, requires_grad=True)

    def grad_on(rows: str) -> torch.Tensor:
        f, y = _rows(predictions, rows), _rows(target, rows)
        risk = (scale * f - y).pow(2).mean()
        return torch.autograd.grad(risk, scale, create_graph=True)[0]

    first = grad_on(estimator.first)
    second = first if estimator.is_squared else grad_on(estimator.second)
    return first * second


def batch_last_moments(
    xx: torch.Tensor, xy: torch.Tensor, repeats: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rearrange per-draw moments into the trainer's batch-last layout.

    ``xx``: ``(D, E, d, d)``, ``xy``: ``(D, E, d)`` become ``(E, d, d, D*repeats)`` and
    ``(E, d, D*repeats)``, model ``b = draw * repeats + j`` (contiguous, so the batch
    is the vectorised innermost axis).
    """
    xx_b = xx.permute(1, 2, 3, 0).repeat_interleave(repeats, dim=-1).contiguous()
    xy_b = xy.permute(1, 2, 0).repeat_interleave(repeats, dim=-1).contiguous()
    return xx_b, xy_b


class LinearIRMv1Gradient:
    """Closed-form gradient of the linear IRMv1 objective for a batch of models.

    Objective of model ``b`` (reference SEM protocol, ``w = 1`` fixed)::

        L_b(Phi_b) = mse_weight_b * sum_e R_e(Phi_b) + penalty_weight_b * sum_e P_e(Phi_b)

    with the reference's ``reg``: ``mse_weight = reg``, ``penalty_weight = 1 - reg``.

    Parameters
    ----------
    xx, xy
        ``(E, d, d, B)`` and ``(E, d, B)`` full-batch moments ``X'X/n``, ``X'y/n`` of the
        training environments, batch-last (see :func:`batch_last_moments`).
    mse_weight, penalty_weight
        ``(B,)`` per-model weights.
    halves
        For the ``split`` estimator: ``(xx_a, xy_a, xx_b, xy_b)``, the moments of the
        even- and odd-indexed samples, same layout. ``None`` gives the ``squared``
        estimator (both halves are the full batch).

    Call it with ``phi`` of shape ``(d, d, B)``; it returns ``dL/dPhi`` of the same shape.
    """

    def __init__(
        self,
        xx: torch.Tensor,
        xy: torch.Tensor,
        mse_weight: torch.Tensor,
        penalty_weight: torch.Tensor,
        halves: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        n_env, d, _, batch = xx.shape
        self.xx, self.xy2 = xx, 2 * xy
        self.mse_weight = mse_weight
        self.pen = penalty_weight / d  # the 1/d of mean_j
        self.halves = None
        if halves is not None:
            xx_a, xy_a, xx_b, xy_b = halves
            self.halves = (xx_a, 2 * xy_a, xx_b, 2 * xy_b)
        self._work = torch.empty((n_env, d, d, batch), dtype=xx.dtype, device=xx.device)

    def freeze(self, mask: torch.Tensor) -> None:
        """Zero the data of models ``mask`` (``(B,)`` bool): their gradient becomes 0."""
        tensors = [self.xx, self.xy2, *(self.halves or ())]
        for t in tensors:
            t[..., mask] = 0

    def _residual(self, xx: torch.Tensor, xy2: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # r = 2 (Sigma v - c): (E, d, B)
        torch.mul(xx, v, out=self._work)
        return self._work.sum(2).mul_(2).sub_(xy2)

    def _phi_t(self, phi: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        # g_j = sum_i Phi_ij r_i
        torch.mul(phi, r[:, :, None, :], out=self._work)
        return self._work.sum(1)

    def _sigma_phi(self, xx: torch.Tensor, phi: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        # Sigma Phi g
        torch.mul(phi, g[:, None, :, :], out=self._work)
        pg = self._work.sum(2)
        torch.mul(xx, pg[:, None, :, :], out=self._work)
        return self._work.sum(2)

    def __call__(self, phi: torch.Tensor) -> torch.Tensor:
        v = phi.sum(1)  # Phi w with w = 1: (d, B)
        r = self._residual(self.xx, self.xy2, v)
        if self.halves is None:
            g = self._phi_t(phi, r)
            s = self._sigma_phi(self.xx, phi, g)
            u = r.sum(0).mul_(self.mse_weight).add_(s.sum(0).mul_(4 * self.pen))
            rw = r * (2 * self.pen)
            grad = torch.addcmul(u[:, None, :], rw[0, :, None, :], g[0, None, :, :])
            for e in range(1, r.shape[0]):
                grad.addcmul_(rw[e, :, None, :], g[e, None, :, :])
            return grad
        xx_a, xy2_a, xx_b, xy2_b = self.halves
        r_a = self._residual(xx_a, xy2_a, v)
        r_b = self._residual(xx_b, xy2_b, v)
        g_a = self._phi_t(phi, r_a)
        g_b = self._phi_t(phi, r_b)
        s = self._sigma_phi(xx_a, phi, g_b) + self._sigma_phi(xx_b, phi, g_a)
        u = r.sum(0).mul_(self.mse_weight).add_(s.sum(0).mul_(2 * self.pen))
        outer = r_a[:, :, None, :] * g_b[:, None, :, :] + r_b[:, :, None, :] * g_a[:, None, :, :]
        return outer.sum(0).mul_(self.pen).add_(u[:, None, :])


def linear_irmv1_objective(
    phi: torch.Tensor,
    xx: torch.Tensor,
    xy: torch.Tensor,
    yy: torch.Tensor,
    mse_weight: torch.Tensor,
    penalty_weight: torch.Tensor,
    halves: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The objective whose gradient :class:`LinearIRMv1Gradient` computes, per model.

    Same layout as there, plus ``yy`` of shape ``(E, B)`` (``y'y/n``). Returns ``(B,)``.
    Written with plain tensor algebra so autograd can differentiate it (tests).
    """
    d = phi.shape[0]
    v = phi.sum(1)
    risk = torch.einsum("ib,eijb,jb->eb", v, xx, v) - 2 * (xy * v).sum(1) + yy

    def grad_w(xx_h: torch.Tensor, xy_h: torch.Tensor) -> torch.Tensor:
        r = 2 * (torch.einsum("eijb,jb->eib", xx_h, v) - xy_h)
        return torch.einsum("ijb,eib->ejb", phi, r)

    if halves is None:
        g = grad_w(xx, xy)
        pen = (g * g).sum(1) / d
    else:
        pen = (grad_w(halves[0], halves[1]) * grad_w(halves[2], halves[3])).sum(1) / d
    return mse_weight * risk.sum(0) + penalty_weight * pen.sum(0)


def scalar_dummy_penalty_grad(
    phi: torch.Tensor,
    xx_a: torch.Tensor,
    xy_a: torch.Tensor,
    xx_b: torch.Tensor,
    xy_b: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Penalty ``g_a g_b`` and its gradient for ``f = x . phi`` with a scalar dummy ``w = 1``.

    With half moments ``Sigma_h = X_h'X_h/n_h`` and ``c_h = X_h'y_h/n_h``:
    ``g_h = dR_h/dw = 2 (phi' Sigma_h phi - phi' c_h)`` and
    ``d(g_a g_b)/dphi = g_b * 2 (2 Sigma_a phi - c_a) + g_a * 2 (2 Sigma_b phi - c_b)``.
    Equal halves give the squared estimator. Shapes: ``phi`` ``(k,)``, ``xx_h``
    ``(k, k)``, ``xy_h`` ``(k,)``. Returns ``(penalty, gradient)``.
    """
    s_a, s_b = xx_a @ phi, xx_b @ phi
    g_a = 2 * (phi @ s_a - phi @ xy_a)
    g_b = 2 * (phi @ s_b - phi @ xy_b)
    grad = g_b * 2 * (2 * s_a - xy_a) + g_a * 2 * (2 * s_b - xy_b)
    return g_a * g_b, grad


# --- Penalties on per-environment statistics, shared by every study's trainer ---------
#
# Shapes: ``M`` stacked models (restarts, grid points, draws), ``E`` training
# environments, ``P`` last-layer parameters. Each function is differentiable in its
# tensor inputs and returns one value per model.


def irmv1_penalty(scale_grads: torch.Tensor) -> torch.Tensor:
    """IRMv1 penalty, the mean over environments of the squared dummy-scale gradient.

    ``scale_grads``: ``(M, E)`` with ``g_e = d/ds R_e(s f)|_{s=1}`` (IRM paper, Section
    3.1, eq. IRMv1; the Colored MNIST reference code averages over the two training
    environments). Returns ``(M,)``.
    """
    return scale_grads.square().mean(-1)


def vrex_penalty(risks: torch.Tensor) -> torch.Tensor:
    """V-REx penalty: the mean squared difference of two environments' risks.

    ``risks``: ``(M, E)``, ``E >= 2``. Returns ``(M,)`` equal to
    ``mean_{e < e'} (R_e - R_e')^2 = 2 * Var_e(R_e)`` (unbiased variance). For two
    environments this is ``(R_1 - R_2)^2``, the form of the Fishr authors' Colored MNIST
    code whose V-REx numbers we compare with; Krueger et al. (2021, arXiv:2003.00688,
    eq. 6) write the variance itself, a factor ``E / (2 (E - 1))`` of the penalty weight
    away (1/4 for ``E = 2``).
    """
    if risks.shape[-1] < 2:
        raise ValueError(f"V-REx needs >= 2 training environments, found {risks.shape[-1]}")
    return 2.0 * risks.var(dim=-1, unbiased=True)


def last_layer_grad_variance(
    residual: torch.Tensor, features: torch.Tensor, env_weights: torch.Tensor
) -> torch.Tensor:
    """Per-environment variance of per-example gradients of a last linear layer.

    For a scalar output ``f_i = w . h_i + b`` and a loss whose derivative in ``f_i`` is
    ``residual_i`` (``sigmoid(f_i) - y_i`` for BCE with logits, ``2 (f_i - y_i)`` for the
    squared error), the gradient of example i's loss in ``(w, b)`` is
    ``residual_i * (h_i, 1)``. Fishr (Ramé et al. 2022, arXiv:2109.02934, eq. 4 and its
    Colored MNIST code) takes, per environment, the variance over its examples of each
    coordinate of these gradients, centred on the environment's mean gradient.

    Parameters
    ----------
    residual
        ``(M, N)`` loss derivative per example (``N`` examples of all environments, any
        padding included).
    features
        ``(M, N, H)`` the last layer's inputs ``h_i``.
    env_weights
        ``(M, E, N)``: ``1 / n_e`` on environment e's examples, 0 elsewhere.

    Returns
    -------
    torch.Tensor
        ``(M, E, H + 1)``: ``Var_e[residual * h_j]`` for j < H, then ``Var_e[residual]``
        (the bias), with the biased (1/n_e) variance as in the authors' code.
    """
    # Var_e[r h_j] = sum_i w_ei r_i^2 h_ij^2 - (sum_i w_ei r_i h_ij)^2: two matrix
    # products, never materialising the (M, N, H) per-example gradients (or their squares).
    wr = env_weights * residual[:, None, :]
    wr2 = wr * residual[:, None, :]
    weight_var = torch.matmul(wr2, features.square()) - torch.matmul(wr, features).square()
    bias_var = wr2.sum(-1, keepdim=True) - wr.sum(-1, keepdim=True).square()
    return torch.cat([weight_var, bias_var], dim=-1)


def fishr_penalty(grad_variance: torch.Tensor) -> torch.Tensor:
    """Fishr penalty ``sum_e || v_e - mean_e' v_e' ||^2`` of gradient variances ``v_e``.

    ``grad_variance``: ``(M, E, P)`` from :func:`last_layer_grad_variance`. Returns
    ``(M,)``; the sum over environments follows the authors' Colored MNIST code.
    """
    centred = grad_variance - grad_variance.mean(dim=1, keepdim=True)
    return centred.square().sum(dim=(1, 2))


def groupdro_weights(q: torch.Tensor, risks: torch.Tensor, eta: float) -> torch.Tensor:
    """One online GroupDRO update ``q_e <- q_e exp(eta R_e) / sum``, without gradient.

    Sagawa et al. (2020, arXiv:1911.08731, Algorithm 1). ``q``, ``risks``: ``(M, E)``;
    returns the new ``(M, E)`` weights (each row sums to 1).
    """
    # The same update in the log domain: exp(eta R) overflows float32 once eta R > 88
    # (SEM risks reach 10^2 at the start), the normalised weights do not.
    return torch.softmax(torch.log(q) + eta * risks.detach(), dim=-1)
