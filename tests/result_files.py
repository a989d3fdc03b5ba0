"""Result files compared across runs (shared by the interruption and SLURM tests)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

# Wall-clock columns kept beside the results for speed tracking; they never repeat.
TIMING_COLUMNS = ("seconds_per_step",)


def comparable_bytes(path: Path) -> bytes:
    """A file's content with timing columns dropped (CSV); other files as they are.

    Every other byte of a result table must repeat between two runs of one config.
    """
    if path.suffix != ".csv":
        return path.read_bytes()
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame = frame.drop(columns=[c for c in TIMING_COLUMNS if c in frame.columns])
    return frame.to_csv(index=False).encode()


def first_difference(ours: bytes, other: bytes, shown: int = 3) -> str:
    """Where two files' comparable bytes part: differing line count and the first few lines."""
    a, b = ours.decode().splitlines(), other.decode().splitlines()
    header = a[0] if a else ""
    rows = [(i, x, y) for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y]
    text = f"{len(rows)} of {max(len(a), len(b))} lines differ ({len(a)} vs {len(b)} lines)"
    if header:
        text += f"; columns {header}"
    for i, x, y in rows[:shown]:
        text += f"\n  line {i + 1}: {x}\n       vs: {y}"
    return text
