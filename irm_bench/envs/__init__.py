"""Environment generators (one module per family) and their registry."""

from __future__ import annotations

from irm_bench.envs.minimal import MinimalExample
from irm_bench.envs.moments import LinearMoments
from irm_bench.envs.sem import SETUP_CODES, ChainSEM, SEMSetup, causal_noncausal_errors
from irm_bench.envs.unit_tests import UNIT_TEST_TASKS, UnitTestTask, make_task
from irm_bench.registry import lookup

#: Environment families by name.
ENVIRONMENTS: dict[str, type] = {
    "chain-sem": ChainSEM,
    "minimal": MinimalExample,
    **UNIT_TEST_TASKS,
}


def get_environment(name: str) -> type:
    """Look up an environment family; the error lists the known names."""
    return lookup(ENVIRONMENTS, name, "environment")


__all__ = [
    "ENVIRONMENTS",
    "SETUP_CODES",
    "UNIT_TEST_TASKS",
    "ChainSEM",
    "LinearMoments",
    "MinimalExample",
    "SEMSetup",
    "UnitTestTask",
    "causal_noncausal_errors",
    "get_environment",
    "make_task",
]
