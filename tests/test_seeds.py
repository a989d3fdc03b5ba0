"""Seeds derived from canonical JSON: order-free, value-sensitive, strict, pinned."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from irm_bench.seeds import canonical_json, derive_seed, numpy_generator, torch_generator


def _by_hand(blob: str) -> int:
    """The documented recipe, applied to JSON text written out by hand."""
    digest = hashlib.sha256(blob.encode("ascii")).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@pytest.mark.parametrize(
    ("identity", "blob", "pinned"),
    [
        (
            {"study": "sem", "setup": "FOU", "draw": 3, "seed": 0},
            '{"draw":3,"seed":0,"setup":"FOU","study":"sem"}',
            2175805343706721465,
        ),
        (
            {"study": "cmnist", "restart": 0, "hparams": {"lr": 0.001, "l2": 0.0011}},
            '{"hparams":{"l2":0.0011,"lr":0.001},"restart":0,"study":"cmnist"}',
            3547248632517914121,
        ),
    ],
)
def test_seed_matches_hand_written_canonical_json(identity, blob, pinned):
    assert canonical_json(identity) == blob
    assert derive_seed(**identity) == _by_hand(blob) == pinned
    # Both pinned digests start with a byte >= 0x80: the top bit really is cleared.
    assert hashlib.sha256(blob.encode()).digest()[7] >= 0x80
    assert 0 <= pinned < 2**63


def test_key_order_does_not_matter_at_any_depth():
    a = derive_seed(study="cmnist", restart=2, hparams={"lr": 1e-3, "l2": 1e-3, "hidden": 256})
    b = derive_seed(hparams={"hidden": 256, "l2": 1e-3, "lr": 1e-3}, restart=2, study="cmnist")
    assert a == b


@pytest.mark.parametrize(
    "changed",
    [
        {"draw": 4},
        {"seed": 1},
        {"setup": "FOS"},
        {"draw": 3.0},  # 3.0 is not 3 in JSON text
        {"extra": None},
    ],
)
def test_a_different_identity_gives_a_different_seed(changed):
    base = {"study": "sem", "setup": "FOU", "draw": 3, "seed": 0}
    assert derive_seed(**base) != derive_seed(**{**base, **changed})


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (object(), TypeError),
        ({1, 2}, TypeError),
        (np.int64(3), TypeError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        ([0.1, -math.inf], ValueError),
        ({"lr": math.nan}, ValueError),
        ({1: "a"}, TypeError),  # would collide with {"1": "a"}
    ],
)
def test_non_json_values_raise_instead_of_str(value, error):
    with pytest.raises(error):
        derive_seed(study="sem", value=value)


def test_generators_repeat_for_a_seed_and_differ_across_seeds():
    seed = derive_seed(study="sem", draw=0)
    other = derive_seed(study="sem", draw=1)
    a = torch.randn(5, generator=torch_generator(seed))
    b = torch.randn(5, generator=torch_generator(seed))
    c = torch.randn(5, generator=torch_generator(other))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    x = numpy_generator(seed).standard_normal(5)
    assert np.array_equal(x, numpy_generator(seed).standard_normal(5))
    assert not np.array_equal(x, numpy_generator(other).standard_normal(5))
