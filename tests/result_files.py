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
