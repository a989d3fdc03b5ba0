"""The Colored MNIST MLP, batched over restarts, on colour-split data.

Model (reference code): MLP 2·14·14 → h → h → 1 with ReLU, Xavier-uniform weights and
zero biases; the grayscale oracle sums the two channels first (input 14·14).

Exact savings over the straightforward computation:

- *Colour split.* Each image has one non-zero channel (its colour c), so
  ``x·W1 = gray·W1[c-block]``. Samples are grouped by colour once and each group is
  multiplied by its own 196-row half of W1: half the first layer's work, same result.
  For the oracle both groups use the same W1.
- *Hidden width padded* to a multiple of 16 with units that stay zero (see
  :func:`init_mlp`): CPU matmul kernels are far slower at h = 390 than at 400.
- *Restarts batched.* Weights are stacked along a leading restart axis R and every
  product is a batched matmul, so one job keeps a device busy. Restarts never mix: the
  gradient of Σ_r loss_r with respect to restart r's weights is that of loss_r.

Packed layout of a set of environments (see :func:`pack_envs`): ``x (R, 2, P, 196)``
holds in ``x[r, c]`` restart r's samples of colour c (all packed environments
together), zero-padded to a common length P; ``weights (R, E, 2, P)`` is 1/n_e on
environment e's samples and 0 elsewhere (padding included), so weighted sums are the
per-environment means.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812

from irm_bench.envs.cmnist import ColoredMnistEnv
from irm_bench.penalties import last_layer_grad_variance
from irm_bench.seeds import torch_generator

N_PIXELS = 14 * 14


@dataclasses.dataclass(frozen=True)
class PackedEnvs:
    """Environments of R restarts in colour-split layout.

    Attributes
    ----------
    x
        ``float32 (R, 2, P, 196)``: pixels in [0, 1] of the digit channel.
    labels
        ``float32 (R, 2, P)`` in {0, 1} (0 on padding).
    weights
        ``float32 (R, E, 2, P)``: 1/n_e on environment e's samples, 0 elsewhere.
    env_names
        The E environment names, in the order of ``weights``' second axis.
    sizes
        ``(R, E)`` environment sizes n_e.
    """

    x: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor
    env_names: tuple[str, ...]
    sizes: tuple[tuple[int, ...], ...]

    def to(self, device: torch.device | str) -> PackedEnvs:
        """A copy on ``device``."""
        return dataclasses.replace(
            self,
            x=self.x.to(device),
            labels=self.labels.to(device),
            weights=self.weights.to(device),
        )


def pack_envs(
    per_restart: Sequence[dict[str, ColoredMnistEnv]], names: Sequence[str]
) -> PackedEnvs:
    """Pack environments ``names`` of each restart into the colour-split layout.

    Parameters
    ----------
    per_restart
        One ``{name: ColoredMnistEnv}`` per restart (R of them).
    names
        Environments to pack together (e.g. ``("env1", "env2")`` or ``("test",)``).
    """
    groups = []  # [r][c] -> (gray (k,196), labels (k,), env ids (k,))
    for envs in per_restart:
        parts = [envs[name] for name in names]
        gray = torch.cat([e.gray.reshape(len(e), N_PIXELS) for e in parts])
        labels = torch.cat([e.labels for e in parts])
        env_id = torch.cat([torch.full((len(e),), i) for i, e in enumerate(parts)])
        colours = torch.cat([e.colours for e in parts])
        groups.append(
            [(gray[colours == c], labels[colours == c], env_id[colours == c]) for c in (0, 1)]
        )
    R, E = len(per_restart), len(names)
    P = max(g[0].shape[0] for by_colour in groups for g in by_colour)
    x = torch.zeros(R, 2, P, N_PIXELS)
    y = torch.zeros(R, 2, P)
    w = torch.zeros(R, E, 2, P)
    sizes = tuple(tuple(len(envs[name]) for name in names) for envs in per_restart)
    for r, by_colour in enumerate(groups):
        for c, (gray, labels, env_id) in enumerate(by_colour):
            k = gray.shape[0]
            x[r, c, :k] = gray.to(torch.float32) / 255.0
            y[r, c, :k] = labels
            for e in range(E):
                w[r, e, c, :k] = (env_id == e).to(torch.float32) / sizes[r][e]
    return PackedEnvs(x=x, labels=y, weights=w, env_names=tuple(names), sizes=sizes)


@dataclasses.dataclass
class StackedMLP:
    """Weights of R independent MLPs, stacked along a leading restart axis.

    Attributes
    ----------
    w1
        ``(R, 392, h)`` (channel-major input rows: channel 0's 196 pixels, then
        channel 1's), or ``(R, 196, h)`` for the grayscale oracle.
    b1, b2
        ``(R, h)``.
    w2
        ``(R, h, h)``.
    w3
        ``(R, h, 1)``.
    b3
        ``(R,)``.
    grayscale
        Whether the first layer sees the channel sum (oracle).
    precision
        ``fp32``, or ``bf16``: the three matmul layers run under bfloat16 autocast
        (weights stay float32; their gradients are float32) and the logits and
        features come back as float32, so losses, penalties and metrics are float32.
    """

    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor
    w3: torch.Tensor
    b3: torch.Tensor
    grayscale: bool
    precision: str = "fp32"

    def parameters(self) -> list[torch.Tensor]:
        """The six stacked parameter tensors."""
        return [self.w1, self.b1, self.w2, self.b2, self.w3, self.b3]

    @property
    def n_models(self) -> int:
        """R, the number of stacked restarts."""
        return int(self.w1.shape[0])

    def squared_norm(self) -> torch.Tensor:
        """Σ‖θ‖² over all parameters of each model, shape ``(R,)``."""
        R = self.n_models
        return sum(p.square().reshape(R, -1).sum(1) for p in self.parameters())

    def logits(self, x: torch.Tensor, *, both_channels: bool = False) -> torch.Tensor:
        """Logits ``(R, 2, P)`` of packed inputs ``x (R, 2, P, 196)``.

        ``both_channels``: score the images with the digit in *both* colour channels
        (the gray test environment) instead of in their colour's channel only.
        """
        return self.logits_and_features(x, both_channels=both_channels)[0]

    def logits_and_features(
        self, x: torch.Tensor, *, both_channels: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(R, 2, P)`` and the last layer's inputs ``h2 (R, 2·P, h)``.

        ``h2[r, c·P + p]`` is the second hidden layer's output on sample ``x[r, c, p]``.
        With ``both_channels`` each image enters both channels, so its first-layer
        product is exactly ``d·(W1[:196] + W1[196:])`` (oracle: the channel sum 2d,
        i.e. ``d·2·W1``), whatever its colour.
        """
        if self.precision == "bf16":
            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
                logits, h2 = self._forward(x, both_channels)
            return logits.float(), h2.float()
        return self._forward(x, both_channels)

    def _forward(self, x: torch.Tensor, both_channels: bool) -> tuple[torch.Tensor, torch.Tensor]:
        R, _, P, _ = x.shape
        h = self.b1.shape[1]
        if self.grayscale or both_channels:  # both colour groups share one 196-row W1
            if self.grayscale:
                w1 = self.w1 * 2.0 if both_channels else self.w1
            else:
                w1 = self.w1[:, :N_PIXELS] + self.w1[:, N_PIXELS:]
            w1 = w1.unsqueeze(1).expand(R, 2, N_PIXELS, h).reshape(2 * R, N_PIXELS, h)
        else:  # colour c's samples meet rows c*196 .. c*196+195 of W1
            w1 = self.w1.view(2 * R, N_PIXELS, h)
        b1 = self.b1.repeat_interleave(2, dim=0)[:, None, :]
        # In-place ReLUs: fewer fresh 10-100 MB buffers per step (allocation is not free).
        h1 = torch.baddbmm(b1, x.view(2 * R, P, N_PIXELS), w1).relu_()
        h2 = torch.baddbmm(self.b2[:, None, :], h1.view(R, 2 * P, h), self.w2).relu_()
        out = torch.baddbmm(self.b3[:, None, None], h2, self.w3)
        return out.view(R, 2, P), h2


def penalised_loss(
    risk_term: torch.Tensor,
    penalty: torch.Tensor,
    model: StackedMLP,
    l2_weight: float,
    lam_t: torch.Tensor,
) -> torch.Tensor:
    """The Colored MNIST step loss ``(R,)``, one penalty weight λ_t per model ``(R,)``.

    ``(risk_term + l2 · Σ‖θ‖² + λ_t · penalty) / max(λ_t, 1)`` (reference code: the loss
    is divided by λ_t only when λ_t > 1). λ_t = 0 adds an exact 0 (``where``, not
    ``0 · penalty``, which is NaN for an infinite penalty).
    """
    loss = risk_term + l2_weight * model.squared_norm()
    loss = loss + torch.where(lam_t > 0, lam_t * penalty, torch.zeros_like(loss))
    return loss / lam_t.clamp(min=1.0)


def xavier_uniform(shape: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    """Xavier-uniform (fan_in, fan_out) matrix: U(-a, a), a = sqrt(6 / (fan_in + fan_out))."""
    bound = math.sqrt(6.0 / (shape[0] + shape[1]))
    return (torch.rand(shape, generator=gen) * 2.0 - 1.0) * bound


def init_mlp(
    seeds: Sequence[int],
    hidden_dim: int,
    grayscale: bool,
    *,
    pad_to: int = 16,
    precision: str = "fp32",
) -> StackedMLP:
    """Initialise one MLP per seed (CPU generators, so any device gets the same weights).

    Xavier-uniform weights use the true width ``hidden_dim``; the stored width is rounded
    up to a multiple of ``pad_to`` with zero weights and biases (matmul kernels run much
    faster on such widths: h = 390 → 400). The padding is exact: a padded unit has zero
    pre-activation, so ReLU gives 0 and passes no gradient, its outgoing weights are 0,
    the weight-decay gradient of a zero weight is 0, and Adam leaves a parameter with
    zero gradient and zero state where it is. Padded units stay 0 for ever and never
    change a logit. ``pad_to=1`` stores the plain width. ``precision``: see
    :class:`StackedMLP`.
    """
    d_in = N_PIXELS if grayscale else 2 * N_PIXELS
    width = -(-hidden_dim // pad_to) * pad_to
    R = len(seeds)
    w1 = torch.zeros(R, d_in, width)
    w2 = torch.zeros(R, width, width)
    w3 = torch.zeros(R, width, 1)
    for r, seed in enumerate(seeds):
        gen = torch_generator(seed)
        w1[r, :, :hidden_dim] = xavier_uniform((d_in, hidden_dim), gen)
        w2[r, :hidden_dim, :hidden_dim] = xavier_uniform((hidden_dim, hidden_dim), gen)
        w3[r, :hidden_dim] = xavier_uniform((hidden_dim, 1), gen)
    return StackedMLP(
        w1=w1,
        b1=torch.zeros(R, width),
        w2=w2,
        b2=torch.zeros(R, width),
        w3=w3,
        b3=torch.zeros(R),
        grayscale=grayscale,
        precision=precision,
    )


@dataclasses.dataclass(frozen=True)
class EnvMetrics:
    """Per-environment metrics of R models, each ``(R, E)``.

    ``risk`` is the mean binary cross-entropy, ``accuracy`` the fraction of samples with
    (logit > 0) == label, ``scale_grad`` the dummy-scale gradient g_e and ``penalty``
    the IRMv1 penalty g_e².
    """

    risk: torch.Tensor
    accuracy: torch.Tensor
    scale_grad: torch.Tensor

    @property
    def penalty(self) -> torch.Tensor:
        """IRMv1 penalty per environment, g_e²."""
        return self.scale_grad.square()


def env_metrics(logits: torch.Tensor, packed: PackedEnvs, *, with_grad: bool = True) -> EnvMetrics:
    """Risk, accuracy and dummy-scale gradient per (model, environment).

    The scale gradient uses the closed form d/ds mean BCE(s f, y)|_{s=1} =
    mean((sigmoid(f) - y) f) (IRM paper, Section 3.1), so the IRMv1 penalty needs no
    double backward pass; accuracy carries no gradient.
    """
    y, w = packed.labels, packed.weights
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    risk = torch.einsum("recp,rcp->re", w, bce)
    f = logits if with_grad else logits.detach()
    scale_grad = torch.einsum("recp,rcp->re", w, (torch.sigmoid(f) - y) * f)
    correct = ((logits.detach() > 0).to(y.dtype) == y).to(y.dtype)
    accuracy = torch.einsum("recp,rcp->re", w, correct)
    return EnvMetrics(risk=risk, accuracy=accuracy, scale_grad=scale_grad)


def packed_grad_variance(
    logits: torch.Tensor, features: torch.Tensor, packed: PackedEnvs
) -> torch.Tensor:
    """Fishr's per-environment variances of the last layer's per-example gradients.

    For BCE with logits the gradient of example i's loss in the last layer's
    ``(w3, b3)`` is ``(sigmoid(f_i) - y_i) · (h2_i, 1)``: the per-example gradient the
    Fishr authors' code gets from BackPACK's ``BatchGrad`` on the mean loss times the
    batch size. Differentiable in ``logits`` and ``features``, as in their code
    (``create_graph=True``). Shapes: ``logits (R, 2, P)``, ``features (R, 2·P, h)``;
    returns ``(R, E, h + 1)`` (see :func:`irm_bench.penalties.last_layer_grad_variance`).
    """
    R, _, P = logits.shape
    residual = (torch.sigmoid(logits) - packed.labels).reshape(R, 2 * P)
    weights = packed.weights.reshape(R, packed.weights.shape[1], 2 * P)
    return last_layer_grad_variance(residual, features, weights)
