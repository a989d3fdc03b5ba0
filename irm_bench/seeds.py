"""Seeds derived from a run's identity.

Every random draw in irm-bench comes from a generator seeded by hashing canonical
JSON (``sort_keys=True``) of what identifies the run, so that adding a value to a
grid, or reordering a config list, never changes the draws of other runs
(the DomainBed habit of per-hyper-parameter seeds).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import torch


def derive_seed(**identity: Any) -> int:
    """Return a 63-bit seed from the canonical JSON of ``identity``.

    ``identity`` must hold JSON-serialisable values (str, int, float, bool, None,
    lists and dicts of those). Raises ``TypeError`` otherwise: ``str()`` of an object
    is never used, since it may change between runs.
    """
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), allow_nan=False)
    digest = hashlib.sha256(blob.encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def torch_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def numpy_generator(seed: int) -> np.random.Generator:
    """A ``numpy.random.Generator`` (PCG64) seeded with ``seed``."""
    return np.random.default_rng(seed)
