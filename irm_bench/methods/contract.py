"""The one method contract of irm-bench, used by every study's trainer.

A method is one :class:`MethodSpec` in :data:`irm_bench.methods.METHODS`: its name, a
label and colour for tables and figures, a frozen dataclass of hyper-parameters (its
defaults and its config schema, :func:`hparams_schema`), the studies that can run it,
and how it trains:

* a gradient method gives an **objective** on the per-environment statistics of one
  step (:class:`EnvStats`): per-environment risks, and what else it declares in
  ``needs`` (the IRMv1 dummy-scale gradients, Fishr's per-example last-layer gradient
  variances). Each study's trainer computes those statistics its own way (moments for
  the linear SEM, a stacked MLP for Colored MNIST) and composes the step loss

      L = risk_term + lambda_t * penalty        (divided by lambda_t when lambda_t > 1,
                                                 in the Colored MNIST protocol)

  from the :class:`ObjectiveTerms` the objective returns;
* a **gradient rule** (optional, ``MethodSpec.gradient_rule``; ANDMask) replaces the
  gradient of that loss by a direction computed from the per-environment parameter
  gradients (``EnvStats.param_grads``); trainers that support it (the unit-test study's
  linear trainer) step ``theta <- theta - lr (direction + wd theta)``;
* a closed-form method (ERM's least squares, ICP) gives ``linear_fit``, a class with
  ``fit(moments) -> LinearFit`` (:mod:`irm_bench.methods.base`), used by the SEM study.

Shapes: ``M`` stacked models, ``E`` training environments, ``P`` last-layer parameters.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

#: Statistics a method can ask a trainer for (``MethodSpec.needs``).
STATS = ("scale_grads", "grad_variance", "param_grads")
#: Studies of irm-bench (``MethodSpec.studies``).
STUDIES = ("sem", "cmnist", "unit_tests")


@dataclass(frozen=True)
class EnvStats:
    """Per-environment statistics of one training step of ``M`` models.

    Attributes
    ----------
    risks
        ``(M, E)`` mean loss of each training environment (differentiable).
    scale_grads
        ``(M, E)`` IRMv1 dummy-scale gradients ``d/ds R_e(s f)|_{s=1}``, when needed.
    grad_variance
        ``(M, E, P)`` per-environment variance of the per-example gradients of the loss
        in the last layer's weights and bias (:func:`irm_bench.penalties.
        last_layer_grad_variance`), when needed.
    param_grads
        ``(M, E, P)`` gradient of each environment's risk in a linear model's ``P``
        parameters, the ``P - 1`` weights first and the bias last (differentiable), when
        needed (ANDMask, IGA in the unit-test study).
    """

    risks: torch.Tensor
    scale_grads: torch.Tensor | None = None
    grad_variance: torch.Tensor | None = None
    param_grads: torch.Tensor | None = None

    def require(self, name: str, method: str) -> torch.Tensor:
        """The statistic ``name``; a trainer that did not compute it is a bug."""
        value = getattr(self, name)
        if value is None:
            raise RuntimeError(f"method {method!r} needs {name!r}, which the trainer left out")
        return value


@dataclass(frozen=True)
class ObjectiveTerms:
    """What an objective returns for one step.

    ``risk_term`` and ``penalty`` are ``(M,)``; ``state`` is the method's state carried
    to the next step (GroupDRO's weights), ``None`` for stateless methods.
    """

    risk_term: torch.Tensor
    penalty: torch.Tensor
    state: Any = None


#: ``objective(stats, hparams, state) -> ObjectiveTerms``; ``state`` is ``None`` at step 0.
Objective = Callable[[EnvStats, Any, Any], ObjectiveTerms]

#: ``gradient_rule(stats, hparams) -> (M, P)`` update direction (see ``MethodSpec``).
GradientRule = Callable[[EnvStats, Any], torch.Tensor]


@dataclass(frozen=True)
class NoHparams:
    """A method without hyper-parameters of its own (its penalty weight λ is the study's)."""


@dataclass(frozen=True)
class MethodSpec:
    """One registered method.

    Attributes
    ----------
    name
        Registry key and config name (``vrex``).
    label, colour
        Display name and matplotlib colour, used by every table and figure.
    studies
        The studies that can run it (a subset of :data:`STUDIES`).
    hparams
        Frozen dataclass of its own hyper-parameters, with defaults.
    objective
        Gradient methods: the step objective (see the module docstring).
    needs
        Statistics the objective reads (a subset of :data:`STATS`).
    penalised
        Whether the study's penalty weight λ applies (false for ERM and GroupDRO, whose
        penalty is identically 0).
    linear_fit
        Closed-form SEM methods: a class ``cls(hparams).fit(moments) -> LinearFit``.
    gradient_rule
        Optional (ANDMask): the ``(M, P)`` direction that replaces the gradient of the
        objective's loss, from ``EnvStats.param_grads`` (so ``needs`` holds
        ``param_grads``); the trainer applies it with plain descent,
        ``theta <- theta - lr (direction + wd theta)``. ``None`` for every other method.
    reference
        The paper (and equation) it implements.
    """

    name: str
    label: str
    colour: str
    studies: frozenset[str]
    hparams: type = NoHparams
    objective: Objective | None = None
    needs: frozenset[str] = frozenset()
    penalised: bool = False
    linear_fit: type | None = None
    reference: str = ""
    gradient_rule: GradientRule | None = None

    def __post_init__(self) -> None:
        unknown = (set(self.studies) - set(STUDIES)) | (set(self.needs) - set(STATS))
        if unknown:
            raise ValueError(f"method {self.name!r}: unknown studies or stats {sorted(unknown)}")
        if self.objective is None and self.linear_fit is None:
            raise ValueError(f"method {self.name!r} needs an objective or a linear_fit")

    def runs_in(self, study: str) -> bool:
        """Whether ``study`` can run this method."""
        return study in self.studies

    def build_hparams(self, values: Mapping[str, Any] | None, where: str) -> Any:
        """The hyper-parameter dataclass from a config mapping (unknown keys: error).

        ``where`` is the dotted config key of the mapping, used in error messages.
        """
        from irm_bench.methods.base import hparams_from_mapping

        return hparams_from_mapping(self.hparams, dict(values or {}), where)


def check_study(spec: MethodSpec, study: str, where: str) -> None:
    """Raise ``ValueError`` naming the config key, the method and the study when
    ``study`` cannot run ``spec``."""
    if not spec.runs_in(study):
        runs = ", ".join(sorted(spec.studies))
        raise ValueError(
            f"config key '{where}': method '{spec.name}' cannot run in the {study} study "
            f"(it runs in: {runs})"
        )


_JSON_TYPES = {float: "number", int: "integer", bool: "boolean", str: "string"}


def hparams_schema(cls: type) -> dict[str, Any]:
    """JSON-schema (2020-12) block of a hyper-parameter dataclass.

    Each field becomes a property with its JSON type and default; a field's
    ``metadata`` may add ``minimum``, ``exclusiveMinimum``, ``maximum`` and
    ``description``. Unknown keys are rejected (``additionalProperties: false``).
    """
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        prop: dict[str, Any] = {"type": _JSON_TYPES[kind]}
        if f.default is not dataclasses.MISSING:
            prop["default"] = f.default
        prop.update(
            {
                k: v
                for k, v in f.metadata.items()
                if k in ("minimum", "exclusiveMinimum", "maximum", "description")
            }
        )
        properties[f.name] = prop
    return {"type": "object", "additionalProperties": False, "properties": properties}


def positive(description: str) -> dict[str, Any]:
    """Field metadata for a hyper-parameter that must be > 0."""
    return {"exclusiveMinimum": 0, "description": description}


__all__ = [
    "STATS",
    "STUDIES",
    "EnvStats",
    "GradientRule",
    "MethodSpec",
    "NoHparams",
    "Objective",
    "ObjectiveTerms",
    "check_study",
    "hparams_schema",
    "positive",
]
