"""Methods by name: one module per method, one registry, one contract.

Every method is a :class:`~irm_bench.methods.contract.MethodSpec` in :data:`METHODS`
(see :mod:`irm_bench.methods.contract`): gradient methods give an objective on
per-environment statistics, which every study's trainer calls; closed-form SEM methods
give a ``linear_fit`` class (``fit`` on per-environment moments, returning a
``LinearFit``). Adding a method is one module with a ``SPEC`` and one line below.
"""

from __future__ import annotations

from typing import Any

from irm_bench.methods import andmask, erm, fishr, groupdro, icp, iga, irmv1, vrex
from irm_bench.methods.base import LinearFit, LinearMethod
from irm_bench.methods.contract import EnvStats, MethodSpec, ObjectiveTerms, check_study
from irm_bench.methods.erm import ERM
from irm_bench.methods.icp import ICP
from irm_bench.methods.irm_linear import LinearIRMv1
from irm_bench.registry import lookup

#: Every method by its config name, in display order.
METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        erm.SPEC,
        icp.SPEC,
        irmv1.SPEC,
        vrex.SPEC,
        fishr.SPEC,
        groupdro.SPEC,
        andmask.SPEC,
        iga.SPEC,
    )
}


def get_method(name: str) -> MethodSpec:
    """Look up a method; the error names the closest match and lists all."""
    return lookup(METHODS, name, "method")


def methods_for(study: str) -> dict[str, MethodSpec]:
    """The registered methods that ``study`` can run, in registry order."""
    return {name: spec for name, spec in METHODS.items() if spec.runs_in(study)}


def build_method(name: str, study_config: Any) -> LinearMethod:
    """Instantiate the SEM fit of method ``name`` with hyper-parameters from a study config.

    ``study_config`` carries one attribute per method with hyper-parameters (``icp``,
    ``irmv1``); methods without them are built with their defaults.
    """
    spec = get_method(name)
    if spec.linear_fit is None:
        raise ValueError(f"method {name!r} has no linear SEM fit")
    hparams = getattr(study_config, name, None)
    return spec.linear_fit(hparams) if hparams is not None else spec.linear_fit()


__all__ = [
    "ERM",
    "ICP",
    "METHODS",
    "EnvStats",
    "LinearFit",
    "LinearIRMv1",
    "MethodSpec",
    "ObjectiveTerms",
    "build_method",
    "check_study",
    "get_method",
    "methods_for",
]
