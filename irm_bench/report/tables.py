"""Reading the result tables the report is built from, with their column contract.

Each study's tables are read together; a study that the config disabled is passed as
``None`` and its section is left out of the report. A missing column is an error that
names the file, the missing columns and the ones found.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

#: Columns the report reads from each table (more columns are allowed).
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "sem_errors": (
        "protocol", "setup", "method", "n_draws", "n_diverged", "causal_error_mean",
        "causal_error_std", "noncausal_error_mean", "noncausal_error_std",
    ),
    "sem_selected_lambda": ("protocol", "setup", "reg", "lambda", "count"),
    "sem_lambda_sweep": (
        "protocol", "setup", "reg", "lambda", "n_draws", "n_diverged", "causal_error_mean",
        "causal_error_std", "noncausal_error_mean", "noncausal_error_std",
    ),
    "sem_draws": (
        "protocol", "setup", "draw", "seed", "method", "reg", "lambda", "diverged",
        "diverged_step",
    ),
    "minimal_trajectory": ("protocol", "step", "phi_0", "phi_1", "phi_2", "phi_3"),
    "cmnist_accuracy": (
        "protocol", "method", "lambda", "n_restarts", "n_diverged", "train_acc_mean",
        "train_acc_std", "test_acc_mean", "test_acc_std",
    ),
    "cmnist_lambda_sweep": (
        "protocol", "lambda", "lambda_index", "n_restarts", "n_diverged", "train_acc_mean",
        "train_acc_std", "test_acc_mean", "test_acc_std",
    ),
    "cmnist_runs": (
        "protocol", "method", "study", "lambda", "restart", "seed", "device", "diverged",
        "diverged_step",
    ),
    "cmnist_curves": (
        "protocol", "method", "study", "lambda", "restart", "step", "environment", "metric",
        "value",
    ),
    "motivating": ("protocol", "source", "regression", "feature", "sigma", "value", "n_samples"),
    "unit_tests": ("protocol", "task", "method", "env", "mean", "std", "n_data_seeds",
                   "selected_trial", "n_trials", "n_diverged", "hparams"),
    "sem_selection": ("protocol", "setup", "rule", "method", "metric", "mean", "std",
                      "n_restarts", "trained_on", "validated_on", "tested_on", "published_rule"),
    "cmnist_selection": ("protocol", "setup", "rule", "method", "metric", "mean", "std",
                         "n_restarts", "trained_on", "validated_on", "tested_on",
                         "published_rule"),
    "unit_tests_selection": ("protocol", "task", "rule", "method", "metric", "mean", "std",
                             "n_restarts", "trained_on", "validated_on", "tested_on",
                             "published_rule"),
}  # fmt: skip


class TableError(ValueError):
    """A result table is missing, empty or lacks columns of the contract."""


def read_table(path: str | Path, name: str) -> pd.DataFrame:
    """Read the CSV at ``path`` and check it holds the columns of table ``name``.

    ``lambda`` columns may hold ``inf`` (the pure-penalty objective); pandas reads it
    as a float. Boolean columns written as ``True``/``False`` come back as bool.
    """
    if name not in REQUIRED_COLUMNS:
        raise KeyError(f"unknown table {name!r}; known: {sorted(REQUIRED_COLUMNS)}")
    path = Path(path)
    if not path.is_file():
        raise TableError(f"table {name}: file {path} does not exist")
    frame = pd.read_csv(path)
    missing = [c for c in REQUIRED_COLUMNS[name] if c not in frame.columns]
    if missing:
        raise TableError(
            f"table {name} ({path}): missing columns {missing}; found {list(frame.columns)}"
        )
    if "diverged" in frame.columns:
        frame["diverged"] = frame["diverged"].map(_as_bool)
    return frame


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value) and value == value  # NaN is not diverged


@dataclass(frozen=True)
class SemTables:
    """Tables of the SEM study (Section 5.1)."""

    errors: pd.DataFrame
    selected_lambda: pd.DataFrame
    lambda_sweep: pd.DataFrame
    draws: pd.DataFrame


@dataclass(frozen=True)
class MinimalTables:
    """The appendix minimal example: φ over training and the final result."""

    trajectory: pd.DataFrame
    final: dict[str, Any]


@dataclass(frozen=True)
class CmnistTables:
    """Tables of the Colored MNIST study (Section 5.2)."""

    accuracy: pd.DataFrame
    lambda_sweep: pd.DataFrame
    runs: pd.DataFrame
    curves: pd.DataFrame


@dataclass(frozen=True)
class ReportTables:
    """Everything the report shows; ``None`` marks a study the config disabled."""

    sem: SemTables | None
    minimal: MinimalTables | None
    cmnist: CmnistTables | None
    motivating: pd.DataFrame | None
    unit_tests: pd.DataFrame | None = None
    #: Method x rule selection tables by study (``sem``, ``cmnist``, ``unit_tests``); a study
    #: without one (e.g. results written before it existed) is simply absent.
    selection: dict[str, pd.DataFrame] = field(default_factory=dict)


def load_tables(paths: dict[str, str | Path | None]) -> ReportTables:
    """Read the tables named in ``paths``.

    Parameters
    ----------
    paths : table name → path, with the keys of :data:`REQUIRED_COLUMNS` plus
        ``minimal_final`` (JSON). A study whose tables are all absent (or ``None``) is
        treated as disabled; one with only some of them present is an error naming the
        missing ones.
    """
    known = {*REQUIRED_COLUMNS, "minimal_final"}
    unknown = set(paths) - known
    if unknown:
        raise KeyError(f"unknown report inputs {sorted(unknown)}; known: {sorted(known)}")

    def group(names: tuple[str, ...]) -> dict[str, Path] | None:
        given = {n: paths.get(n) for n in names}
        present = {n: Path(p) for n, p in given.items() if p is not None}
        if not present:
            return None
        if len(present) < len(names):
            missing = sorted(set(names) - set(present))
            raise TableError(f"report inputs: {missing} missing while {sorted(present)} given")
        return present

    sem_paths = group(("sem_errors", "sem_selected_lambda", "sem_lambda_sweep", "sem_draws"))
    minimal_paths = group(("minimal_trajectory", "minimal_final"))
    cmnist_paths = group(
        ("cmnist_accuracy", "cmnist_lambda_sweep", "cmnist_runs", "cmnist_curves")
    )
    sem = (
        SemTables(
            errors=read_table(sem_paths["sem_errors"], "sem_errors"),
            selected_lambda=read_table(sem_paths["sem_selected_lambda"], "sem_selected_lambda"),
            lambda_sweep=read_table(sem_paths["sem_lambda_sweep"], "sem_lambda_sweep"),
            draws=read_table(sem_paths["sem_draws"], "sem_draws"),
        )
        if sem_paths
        else None
    )
    minimal = None
    if minimal_paths:
        final_path = minimal_paths["minimal_final"]
        try:
            final = json.loads(final_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise TableError(f"minimal_final ({final_path}): {err}") from err
        minimal = MinimalTables(
            read_table(minimal_paths["minimal_trajectory"], "minimal_trajectory"), final
        )
    cmnist = (
        CmnistTables(
            accuracy=read_table(cmnist_paths["cmnist_accuracy"], "cmnist_accuracy"),
            lambda_sweep=read_table(cmnist_paths["cmnist_lambda_sweep"], "cmnist_lambda_sweep"),
            runs=read_table(cmnist_paths["cmnist_runs"], "cmnist_runs"),
            curves=read_table(cmnist_paths["cmnist_curves"], "cmnist_curves"),
        )
        if cmnist_paths
        else None
    )
    motivating = read_table(paths["motivating"], "motivating") if paths.get("motivating") else None
    unit_tests = read_table(paths["unit_tests"], "unit_tests") if paths.get("unit_tests") else None
    selection = {
        study: read_table(paths[f"{study}_selection"], f"{study}_selection")
        for study in ("sem", "cmnist", "unit_tests")
        if paths.get(f"{study}_selection")
    }
    return ReportTables(sem, minimal, cmnist, motivating, unit_tests, selection)
