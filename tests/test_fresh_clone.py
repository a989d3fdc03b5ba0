"""A user's clone has nothing beside it: the README's set-up path works there.

The working tree (tracked and untracked, not ignored, files: what a clone of this
commit holds) is copied into ``<tmp>/x/main`` with nothing else in ``<tmp>/x``, and this
checkout's virtual environment is linked in (building one takes minutes and is what
``make venv`` does anyway). There, ``make lint`` (the first half of ``make test``: ruff,
snakefmt and ``snakemake --lint`` on the smoke config) and dry runs of the default and
the smoke config (the first step of ``make run`` and of the README's smoke example)
must pass: no config, default or rule may need a folder outside the clone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _worktree_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    return [f for f in out.decode().split("\0") if f and (REPO / f).is_file()]


@pytest.fixture(scope="module")
def bare_clone(tmp_path_factory) -> Path:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    venv = REPO / ".venv"
    if not (venv / "bin" / "snakemake").exists():
        pytest.skip("no .venv with snakemake in this checkout (make venv builds it)")
    clone = tmp_path_factory.mktemp("fresh") / "x" / "main"
    for rel in _worktree_files():
        (clone / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, clone / rel)
    (clone / ".venv").symlink_to(venv)
    assert sorted(p.name for p in clone.parent.iterdir()) == ["main"]
    return clone


def _run(clone: Path, *cmd: str, timeout: int = 300) -> subprocess.CompletedProcess:
    # The clone's own code, not this checkout's editable install.
    env = {**os.environ, "PYTHONPATH": str(clone)}
    env.pop("IRM_BENCH_MNIST_SOURCE", None)
    return subprocess.run(
        cmd, cwd=clone, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_configs_name_no_path_outside_the_clone(bare_clone):
    def strings(node):
        if isinstance(node, dict):
            for value in node.values():
                yield from strings(value)
        elif isinstance(node, list):
            for value in node:
                yield from strings(value)
        elif isinstance(node, str):
            yield node

    for path in [bare_clone / "config.yaml", *sorted((bare_clone / "config").glob("*.yaml"))]:
        outside = [s for s in strings(yaml.safe_load(path.read_text())) if ".." in Path(s).parts]
        assert not outside, f"{path.name} names paths outside the clone: {outside}"


def test_make_lint_passes_in_a_bare_clone(bare_clone):
    # -o: the linked venv counts as up to date (copied files are newer than it).
    done = _run(bare_clone, "make", "-s", "-o", ".venv/bin/activate", "-o", "venv", "lint")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]


@pytest.mark.parametrize("configfile", ["config.yaml", "config/smoke.yaml", "config/paper.yaml"])
def test_dry_run_in_a_bare_clone(bare_clone, configfile):
    snakemake = str(bare_clone / ".venv" / "bin" / "snakemake")
    done = _run(bare_clone, sys.executable, "-c", "pass")  # the interpreter works at all
    assert done.returncode == 0
    done = _run(bare_clone, snakemake, "-n", "--cores", "2", "--configfile", configfile)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    # The MNIST fetch is part of the plan: the product gets MNIST itself.
    assert "cmnist_data" in done.stdout
