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


def _check_keys(value: Any, path: str) -> None:
    """Reject mapping keys that are not strings: JSON would turn ``1`` into ``"1"``."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"derive_seed: key {key!r} at {path} is a {type(key).__name__}, expected a "
                    "str (JSON would silently turn it into a string and merge identities)"
                )
            _check_keys(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_keys(item, f"{path}[{i}]")


def canonical_json(identity: dict[str, Any]) -> str:
    """The canonical JSON text of a run identity: sorted keys, no spaces, ASCII, no NaN.

    Raises
    ------
    TypeError
        A value is not JSON-serialisable (an object, a set, a numpy integer) or a
        mapping key is not a string.
    ValueError
        A float is NaN or infinite (not valid JSON).
    """
    _check_keys(identity, "identity")
    return json.dumps(identity, sort_keys=True, separators=(",", ":"), allow_nan=False)


def derive_seed(**identity: Any) -> int:
    """Return a 63-bit seed from the canonical JSON of ``identity``.

    The seed is the first 8 bytes of ``sha256(canonical_json(identity))`` read as a
    little-endian integer, top bit cleared (so it fits a signed 64-bit generator seed).
    Key order never matters; tuples hash like lists; ``1`` and ``1.0`` differ.

    Raises
    ------
    TypeError
        ``identity`` holds a value that is not JSON-serialisable (str, int, float, bool,
        None, lists and str-keyed dicts of those) or a non-string mapping key: ``str()``
        of an object is never used, since it may change between runs.
    ValueError
        ``identity`` holds NaN or an infinity.
    """
    digest = hashlib.sha256(canonical_json(identity).encode("ascii")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def torch_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def numpy_generator(seed: int) -> np.random.Generator:
    """A ``numpy.random.Generator`` (PCG64) seeded with ``seed``."""
    return np.random.default_rng(seed)
