"""Run the snakemake command line from tests (shared by test_slurm and test_profiles)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The stand-alone test workflow (data -> GPU-capable training -> aggregate).
TOY_SNAKEFILE = Path(__file__).resolve().parent / "slurm_workflow" / "Snakefile"
# Hard limit per snakemake call: a hung controller fails the test instead of CI.
RUN_TIMEOUT_S = 900


def run_snakemake(
    args: Sequence[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m snakemake ARGS`` in ``cwd``; stdout and stderr merged.

    The worktree is put first on ``PYTHONPATH`` (jobs inherit it). The run gets its own
    process group, killed as a whole on timeout, which fails the test.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"snakemake timed out after {RUN_TIMEOUT_S} s:\n{out[-5000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def with_config(args: Sequence[str], **overrides: object) -> list[str]:
    """``args`` plus ``--config key=value`` pairs, merged into an existing --config.

    Booleans must be passed as Python bools: Snakemake reads ``True``/``False``.
    Keep targets before the returned list (``--config`` swallows what follows).
    """
    pairs = [f"{k}={v}" for k, v in overrides.items()]
    args = list(args)
    if "--config" in args:
        i = args.index("--config") + 1
        while i < len(args) and not args[i].startswith("-"):
            i += 1
        return [*args[:i], *pairs, *args[i:]]
    return [*args, "--config", *pairs]
