"""Atomic file output: every artifact is written to a temporary file in the same
folder and renamed into place, so no reader ever sees half a file and a failed run
never clobbers a good one."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left untouched.
    The temporary name keeps the suffix, so libraries that infer the format from
    it (matplotlib, pandas) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file for writing; it replaces ``path`` only on success."""
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        yield fh


def write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    """Write ``frame`` to ``path`` as CSV (no index), atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_json(obj: Any, path: str | Path) -> None:
    """Write ``obj`` as indented JSON (sorted keys), atomically. NaN/inf become null."""
    with atomic_open(path) as fh:
        json.dump(_finite(obj), fh, indent=2, sort_keys=True)
        fh.write("\n")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def save_figure(fig: Any, path: str | Path, **kwargs: Any) -> None:
    """Save a matplotlib figure atomically (format from the suffix of ``path``)."""
    fmt = Path(path).suffix.lstrip(".")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, **kwargs)
