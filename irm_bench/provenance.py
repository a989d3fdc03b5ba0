"""Provenance of a run: code version, configuration, software, machine and times.

Everything here is read, never guessed: the git commit and dirty flag come from
``git``, versions from the installed distributions, per-rule run times from
Snakemake's ``benchmark:`` files (tab-separated, one row per repeat, column ``s`` the
wall-clock seconds), and the MNIST checksums from the file the data rule writes.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from irm_bench.seeds import canonical_json

#: Distributions whose versions every report lists (missing ones are shown as such).
PACKAGES = (
    "irm-bench",
    "torch",
    "numpy",
    "pandas",
    "scipy",
    "matplotlib",
    "seaborn",
    "snakemake",
    "jinja2",
    "weasyprint",
    "pooch",
)


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``config``."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


@dataclass(frozen=True)
class GitState:
    """Commit of the working tree and whether tracked or untracked files differ.

    ``commit`` is ``None`` outside a git checkout (e.g. an unpacked archive).
    """

    commit: str | None
    dirty: bool | None
    changed: tuple[str, ...] = ()


def git_state(repo: str | Path) -> GitState:
    """Read ``git rev-parse HEAD`` and ``git status --porcelain`` in ``repo``.

    Ignored files (``results/``) never make the tree dirty; up to 20 changed paths are
    kept for the report.
    """

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
        ).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        status = git("status", "--porcelain", "--untracked-files=normal").splitlines()
    except (OSError, subprocess.CalledProcessError):
        return GitState(None, None)
    return GitState(commit, bool(status), tuple(line[3:] for line in status[:20]))


def head_commit() -> str:
    """HEAD commit of the checkout holding this package, or ``unknown`` outside git."""
    return git_state(Path(__file__).resolve().parent).commit or "unknown"


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed version of each distribution, ``"not installed"`` when absent."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine() -> dict[str, str]:
    """Python, OS, CPU and the accelerator torch sees on the machine building the report."""
    info = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": str(os.cpu_count()),
        "hostname": platform.node(),
    }
    try:
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            info["cuda"] = f"CUDA {torch.version.cuda}: " + ", ".join(names)
        else:
            info["cuda"] = "no CUDA device visible"
    except ImportError:  # pragma: no cover - torch is a dependency
        info["cuda"] = "torch not installed"
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@dataclass(frozen=True)
class BenchmarkRecord:
    """One Snakemake benchmark file: ``<study>_<rest>.tsv`` under the benchmark folder.

    Attributes
    ----------
    study : first ``_``-separated token of the file name (``sem``, ``cmnist``, ...).
    job : the rest of the stem (rule and wildcards).
    seconds : wall-clock seconds (mean over the file's repeats).
    max_rss_mb : peak resident memory in MB, ``None`` when Snakemake could not measure it.
    finished : modification time of the file (when the job ended), UTC.
    """

    study: str
    job: str
    seconds: float
    max_rss_mb: float | None
    finished: dt.datetime


def read_benchmarks(folder: str | Path) -> list[BenchmarkRecord]:
    """Parse every ``*.tsv`` in ``folder`` (recursively), sorted by file name.

    Raises ``ValueError`` naming the file when it lacks the ``s`` column or holds no row.
    A missing folder gives an empty list.
    """
    folder = Path(folder)
    records = []
    for path in sorted(folder.rglob("*.tsv")) if folder.is_dir() else []:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if not rows or "s" not in rows[0]:
            raise ValueError(
                f"benchmark file {path}: expected Snakemake's tab-separated columns "
                f"(s, h:m:s, max_rss, ...) and at least one row; found {list(rows[:1])}"
            )
        seconds = sum(float(r["s"]) for r in rows) / len(rows)
        rss = [_float_or_none(r.get("max_rss")) for r in rows]
        rss_known = [v for v in rss if v is not None]
        stem = path.relative_to(folder).with_suffix("").as_posix().replace("/", "_")
        study, _, job = stem.partition("_")
        finished = dt.datetime.fromtimestamp(path.stat().st_mtime, tz=dt.UTC)
        records.append(
            BenchmarkRecord(
                study, job or study, seconds, max(rss_known) if rss_known else None, finished
            )
        )
    return records


def _float_or_none(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "", "NA", "-") else None
    except ValueError:
        return None
    return value


@dataclass(frozen=True)
class StudyTime:
    """Run time of one study from its benchmark files.

    ``job_seconds`` sums the jobs' wall-clock times (what the study costs on one
    worker); ``span`` runs from the earliest job start (file time minus its duration) to
    the last job end, which is shorter when jobs ran in parallel.
    """

    study: str
    n_jobs: int
    job_seconds: float
    start: dt.datetime
    end: dt.datetime

    @property
    def span_seconds(self) -> float:
        return (self.end - self.start).total_seconds()


def study_times(records: list[BenchmarkRecord]) -> list[StudyTime]:
    """Group benchmark records by study (in order of first appearance)."""
    out: dict[str, list[BenchmarkRecord]] = {}
    for r in records:
        out.setdefault(r.study, []).append(r)
    return [
        StudyTime(
            study,
            len(rs),
            sum(r.seconds for r in rs),
            min(r.finished - dt.timedelta(seconds=r.seconds) for r in rs),
            max(r.finished for r in rs),
        )
        for study, rs in out.items()
    ]


def read_checksums(path: str | Path | None) -> list[dict[str, str]]:
    """The MNIST checksum file as rows ``{"name", "sha256", "source"}``, sorted by name.

    Two layouts are read: a flat JSON object (file name → SHA-256), and the data rule's
    record ``{"files": [{"name", "sha256", "source", ...}, ...], ...}``. ``path=None``
    gives ``[]``. Anything else raises ``ValueError`` naming the file.
    """
    if path is None:
        return []
    data = json.loads(Path(path).read_text())
    rows: list[dict[str, str]] = []
    if isinstance(data, dict) and isinstance(data.get("files"), list):
        for entry in data["files"]:
            if not isinstance(entry, dict) or "name" not in entry or "sha256" not in entry:
                raise ValueError(f"{path}: each entry of 'files' needs 'name' and 'sha256'")
            rows.append(
                {
                    "name": str(entry["name"]),
                    "sha256": str(entry["sha256"]),
                    "source": str(entry.get("source", "")),
                }
            )
    elif isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
        rows = [{"name": k, "sha256": v, "source": ""} for k, v in data.items()]
    else:
        raise ValueError(
            f"{path}: expected a JSON object mapping file name to SHA-256, or one with a "
            f"'files' list of {{name, sha256, source}}; found keys {list(data)[:5]}"
        )
    return sorted(rows, key=lambda r: r["name"])


@dataclass(frozen=True)
class Provenance:
    """Everything the report's provenance section shows."""

    git: GitState
    config: dict[str, Any]
    config_hash: str
    packages: dict[str, str]
    machine: dict[str, str]
    benchmarks: list[BenchmarkRecord]
    studies: list[StudyTime]
    checksums: list[dict[str, str]]
    start: dt.datetime | None
    end: dt.datetime
    devices: dict[str, list[str]] = field(default_factory=dict)


def collect_provenance(
    config: dict[str, Any],
    repo: str | Path,
    benchmark_dir: str | Path,
    checksums: str | Path | None = None,
    devices: dict[str, list[str]] | None = None,
    now: dt.datetime | None = None,
) -> Provenance:
    """Gather the provenance of a run.

    Parameters
    ----------
    config : the validated workflow configuration (shown in full and hashed).
    repo : folder of the git checkout (the workflow's base directory).
    benchmark_dir : Snakemake benchmark folder (``{results_dir}/benchmarks``).
    checksums : MNIST checksum JSON, or None when Colored MNIST did not run.
    devices : study → devices recorded in its result rows (e.g. ``{"cmnist": ["cpu"]}``).
    now : end time of the run (defaults to the current UTC time).

    The run's start is the earliest job start found in the benchmark files (``None``
    without any); its end is ``now``, when the report is built.
    """
    records = read_benchmarks(benchmark_dir)
    studies = study_times(records)
    end = now or dt.datetime.now(tz=dt.UTC)
    return Provenance(
        git=git_state(repo),
        config=config,
        config_hash=config_hash(config),
        packages=package_versions(),
        machine=machine(),
        benchmarks=records,
        studies=studies,
        checksums=read_checksums(checksums),
        start=min((s.start for s in studies), default=None),
        end=end,
        devices=devices or {},
    )
