"""Environment generators (one module per family) and their registry."""

from __future__ import annotations

import difflib

from irm_bench.envs.minimal import MinimalExample
from irm_bench.envs.moments import LinearMoments
from irm_bench.envs.sem import SETUP_CODES, ChainSEM, SEMSetup, causal_noncausal_errors

#: Environment families by name.
ENVIRONMENTS: dict[str, type] = {"chain-sem": ChainSEM, "minimal": MinimalExample}


def get_environment(name: str) -> type:
    """Look up an environment family; the error lists the known names."""
    try:
        return ENVIRONMENTS[name]
    except KeyError:
        hint = difflib.get_close_matches(name, ENVIRONMENTS, n=1)
        did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise KeyError(
            f"unknown environment {name!r}{did_you_mean}; known: {', '.join(ENVIRONMENTS)}"
        ) from None


__all__ = [
    "ENVIRONMENTS",
    "SETUP_CODES",
    "ChainSEM",
    "LinearMoments",
    "MinimalExample",
    "SEMSetup",
    "causal_noncausal_errors",
    "get_environment",
]
