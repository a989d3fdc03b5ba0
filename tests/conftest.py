"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (where Snakefile lives)."""
    return REPO


@pytest.fixture(scope="session")
def mnist_source() -> Path:
    """Folder with the original MNIST IDX files (gzip), never downloaded in tests.

    Taken from ``IRM_BENCH_MNIST_SOURCE``, else ``../shared/data/mnist``. Missing files
    skip the test locally but fail under CI, where they must be present.
    """
    path = Path(os.environ.get("IRM_BENCH_MNIST_SOURCE", REPO.parent / "shared/data/mnist"))
    if not (path / "train-images-idx3-ubyte.gz").exists():
        if os.environ.get("CI"):
            pytest.fail(f"MNIST source folder {path} is missing in CI")
        pytest.skip(f"no MNIST source folder at {path}")
    return path
