"""Methods by name: one module per family, one registry.

The linear SEM methods share the contract of :mod:`irm_bench.methods.base` (``fit`` on
a batch of draws' per-environment moments, returning a ``LinearFit``).
"""

from __future__ import annotations

from typing import Any

from irm_bench.methods.base import LinearFit, LinearMethod
from irm_bench.methods.erm import ERM
from irm_bench.methods.icp import ICP
from irm_bench.methods.irm_linear import LinearIRMv1
from irm_bench.registry import lookup

#: Linear SEM methods by their config name.
METHODS: dict[str, type] = {"erm": ERM, "icp": ICP, "irmv1": LinearIRMv1}


def get_method(name: str) -> type:
    """Look up a method class; the error names the closest match and lists all."""
    return lookup(METHODS, name, "method")


def build_method(name: str, study_config: Any) -> LinearMethod:
    """Instantiate method ``name`` with its hyper-parameters from a study config.

    ``study_config`` carries one attribute per method with hyper-parameters (``icp``,
    ``irmv1``); methods without them are built with their defaults.
    """
    cls = get_method(name)
    hparams = getattr(study_config, name, None)
    return cls(hparams) if hparams is not None else cls()


__all__ = ["ERM", "ICP", "METHODS", "LinearFit", "LinearIRMv1", "build_method", "get_method"]
