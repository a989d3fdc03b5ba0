"""Steps of the Colored MNIST branch of the DAG, each one typed function.

``fetch_step`` (MNIST, verified) → ``train_job`` (one per method / λ point) →
``collect`` (tidy ``runs.csv`` and ``curves.csv``) → ``summarise`` (Table 1 and λ-sweep
tables) → :mod:`irm_bench.cmnist.figures`; ``collect`` → the model-selection table
(:func:`irm_bench.cmnist.selection.selection_step`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
import torch

from irm_bench.cmnist.model import init_mlp, pack_envs
from irm_bench.cmnist.presets import ORACLE, PROTOCOL, StudyPlan, TrainJob, build_plan
from irm_bench.cmnist.train import keep_freed_memory, train_stacked
from irm_bench.devices import resolve_device
from irm_bench.envs.cmnist import (
    SELECTION_ENVS,
    TRAIN_ENVS,
    data_seed,
    make_environments,
    make_selection_environments,
)
from irm_bench.io import write_csv, write_json
from irm_bench.mnist import MNIST_FILES, fetch_mnist, load_mnist_test, load_mnist_train
from irm_bench.provenance import head_commit
from irm_bench.seeds import derive_seed

RUN_COLUMNS = [
    "protocol", "preset", "method", "study", "lambda", "lambda_index", "restart", "seed",
    "data_seed", "init_seed", "device", "steps", "anneal_steps", "hidden_dim", "l2_weight",
    "lr", "precision", "n_train_per_env", "diverged", "diverged_step", "train_acc", "test_acc",
    "gray_test_acc", "train_risk", "test_risk", "gray_test_risk", "train_penalty",
    "test_penalty", "env1_acc", "env2_acc",
    "env1_risk", "env2_risk", "env1_penalty", "env2_penalty", "seconds_per_step",
    "torch_version", "git_commit",
]  # fmt: skip
CURVE_COLUMNS = [
    "protocol", "method", "study", "lambda", "lambda_index", "restart", "step",
    "anneal_steps", "environment", "metric", "value",
]  # fmt: skip


def init_seed(base_seed: int, method: str, restart: int) -> int:
    """Seed of a restart's initial weights (shared by every λ of IRMv1).

    Derived under the Table 1 protocol tag for every preset, so a restart of a method
    starts from the same seed whichever protocol its row is reported under.
    """
    return derive_seed(
        protocol=PROTOCOL, role="init", method=method, restart=restart, seed=base_seed
    )


def fetch_step(
    cache_dir: str | Path, local_source: str | Path | None, checksums_path: str | Path
) -> None:
    """Fetch and verify the MNIST files; record names, SHA-256 and sources as JSON."""
    records = fetch_mnist(cache_dir, local_source=local_source)
    write_json(
        {
            "dataset": "MNIST (LeCun, Cortes, Burges), original IDX files",
            "hash": "sha256 of the uncompressed file",
            "files": [
                {
                    "name": r.name,
                    "sha256": r.sha256,
                    "expected_sha256": MNIST_FILES[r.name].sha256,
                    "source": r.source,
                    "path": r.path,
                }
                for r in records
            ],
        },
        checksums_path,
    )


def _chunks(restarts: range, size: int) -> list[range]:
    return [
        range(i, min(restarts.stop, i + size)) for i in range(restarts.start, restarts.stop, size)
    ]


def train_job(
    job: TrainJob,
    plan: StudyPlan,
    *,
    cache_dir: str | Path,
    device: str,
    log_every: int,
    restarts_per_chunk: int | None,
    threads: int,
    runs_path: str | Path,
    curves_path: str | Path,
    progress: TextIO | None = None,
    restarts: range | None = None,
    validation_fraction: float | None = None,
) -> pd.DataFrame:
    """Train every restart of ``job`` and write its rows of ``runs`` and ``curves``.

    Restarts are trained stacked, ``restarts_per_chunk`` at a time (``None``: all at
    once on CUDA, one at a time on the CPU, where stacking saves nothing and costs
    memory). Each row of a restart used by both studies appears once per study.
    ``restarts``: train only these of the job's restarts (``None``: all); a restart's
    numbers do not depend on which others are trained, so the job's work can be split.
    ``validation_fraction``: also evaluate the model-selection environments
    (:func:`irm_bench.envs.cmnist.make_selection_environments`, from MNIST's t10k file)
    at every logged step, into ``curves`` only (``None``: selection disabled); the
    training data and every ``runs`` number stay the same.

    Returns the runs table that was written.
    """
    torch.set_num_threads(max(1, min(threads, os.cpu_count() or 1)))
    dev = resolve_device(device)
    mnist = load_mnist_train(cache_dir)
    t10k = load_mnist_test(cache_dir) if validation_fraction is not None else None
    hp = job.hparams
    if restarts_per_chunk is None:
        restarts_per_chunk = job.restarts if dev.type == "cuda" else 1
    commit = head_commit()
    run_rows: list[dict[str, Any]] = []
    curve_frames = []
    for chunk in _chunks(
        range(job.restarts) if restarts is None else restarts, restarts_per_chunk
    ):
        dseeds = [data_seed(plan.seed, r) for r in chunk]
        iseeds = [init_seed(plan.seed, job.method, r) for r in chunk]
        envs = [
            make_environments(mnist, s, max_train_per_env=plan.max_train_per_env) for s in dseeds
        ]
        train = pack_envs(envs, TRAIN_ENVS).to(dev)
        test = pack_envs(envs, ("test",)).to(dev)
        extra = None
        if t10k is not None:
            held = [
                make_selection_environments(t10k, e, s, validation_fraction)
                for e, s in zip(envs, dseeds, strict=True)
            ]
            extra = pack_envs(held, SELECTION_ENVS).to(dev)
        model = init_mlp(iseeds, hp.hidden_dim, hp.grayscale, precision=hp.precision)
        for name in ("w1", "b1", "w2", "b2", "w3", "b3"):
            setattr(model, name, getattr(model, name).to(dev))
        label = f"{job.name} restarts {chunk.start}-{chunk.stop - 1}"
        weights = [pt.penalty_weight for pt in job.points]
        result = train_stacked(
            model,
            train,
            test,
            hp,
            log_every=log_every,
            progress=progress,
            desc=label,
            penalty_weights=weights if len(weights) > 1 else None,
            extra=extra,
        )
        n_train = len(envs[0]["env1"])
        R = len(chunk)
        for ell, point in enumerate(job.points):
            for pos, restart in enumerate(chunk):
                k = ell * R + pos  # position in the (fork-major) stacked result
                row = _run_row(result, k, job.hparams_at(point), point.lambda_index)
                row.update(
                    preset=plan.preset.name,
                    method=job.method,
                    restart=restart,
                    seed=plan.seed,
                    data_seed=dseeds[pos],
                    init_seed=iseeds[pos],
                    device=dev.type,
                    n_train_per_env=n_train,
                    git_commit=commit,
                )
                for study, n in point.studies().items():
                    if restart < n:
                        run_rows.append({**row, "study": study})
            curves = result.curves[result.curves["restart_pos"] // R == ell]
            curves = curves.assign(
                restart=np.asarray(chunk)[curves["restart_pos"] % R],
                protocol=hp.protocol,
                method=job.method,
                **{"lambda": point.penalty_weight},
                lambda_index=point.lambda_index,
                anneal_steps=hp.penalty_anneal_steps,
            )
            studies = pd.DataFrame(
                [(st, r) for st, n in point.studies().items() for r in range(n)],
                columns=["study", "restart"],
            )
            curve_frames.append(curves.merge(studies, on="restart")[CURVE_COLUMNS])
    runs = pd.DataFrame(run_rows, columns=RUN_COLUMNS)
    runs = runs.astype({"lambda_index": "Int64", "diverged_step": "Int64"})
    curves = pd.concat(curve_frames, ignore_index=True).astype({"lambda_index": "Int64"})
    write_csv(curves, curves_path)
    write_csv(runs, runs_path)
    return runs


def _run_row(result: Any, k: int, hp: Any, lambda_index: int | None) -> dict[str, Any]:
    """The metrics and hyper-parameter columns of ``runs.csv`` for stacked model ``k``."""
    f = {key: float(v[k]) for key, v in result.final.items()}
    diverged = bool(result.diverged[k])
    return {
        "protocol": hp.protocol,
        "lambda": hp.penalty_weight,
        "lambda_index": lambda_index,
        "steps": hp.steps,
        "anneal_steps": hp.penalty_anneal_steps,
        "hidden_dim": hp.hidden_dim,
        "l2_weight": hp.l2_weight,
        "lr": hp.lr,
        "precision": hp.precision,
        "diverged": diverged,
        "diverged_step": int(result.diverged_step[k]) if diverged else None,
        "train_acc": (f["env1_accuracy"] + f["env2_accuracy"]) / 2,
        "test_acc": f["test_accuracy"],
        "gray_test_acc": f["gray_test_accuracy"],
        "train_risk": (f["env1_risk"] + f["env2_risk"]) / 2,
        "test_risk": f["test_risk"],
        "gray_test_risk": f["gray_test_risk"],
        "train_penalty": (f["env1_penalty"] + f["env2_penalty"]) / 2,
        "test_penalty": f["test_penalty"],
        "env1_acc": f["env1_accuracy"],
        "env2_acc": f["env2_accuracy"],
        "env1_risk": f["env1_risk"],
        "env2_risk": f["env2_risk"],
        "env1_penalty": f["env1_penalty"],
        "env2_penalty": f["env2_penalty"],
        # wall time of the job's stacked step (all its λ and restarts together)
        "seconds_per_step": result.seconds / hp.steps,
        "torch_version": torch.__version__,
    }


def train_job_from_config(
    cmnist: Mapping[str, Any],
    job_name: str,
    *,
    device: str,
    threads: int,
    runs_path: str | Path,
    curves_path: str | Path,
    progress: TextIO | None = None,
) -> pd.DataFrame:
    """Build the plan from the validated ``cmnist`` config and run job ``job_name``.

    Raises ``KeyError`` listing the plan's jobs when ``job_name`` is not one of them.
    """
    plan = build_plan(cmnist)
    if job_name not in plan.jobs:
        raise KeyError(
            f"unknown Colored MNIST job {job_name!r}; this config has: {', '.join(plan.jobs)}"
        )
    from irm_bench.cmnist.selection import validation_fraction

    keep_freed_memory()
    return train_job(
        plan.jobs[job_name],
        plan,
        cache_dir=cmnist["cache_dir"],
        device=device,
        log_every=cmnist["log_every"],
        restarts_per_chunk=cmnist.get("restarts_per_chunk"),
        threads=threads,
        runs_path=runs_path,
        curves_path=curves_path,
        progress=progress,
        validation_fraction=validation_fraction(cmnist),
    )


def collect(
    runs_paths: Sequence[str | Path],
    curves_paths: Sequence[str | Path],
    runs_out: str | Path,
    curves_out: str | Path,
) -> None:
    """Concatenate the per-job tables into ``runs.csv`` and ``curves.csv``."""
    runs = pd.concat([pd.read_csv(p) for p in runs_paths], ignore_index=True)
    curves = pd.concat([pd.read_csv(p) for p in curves_paths], ignore_index=True)
    ints = {"lambda_index": "Int64"}
    runs, curves = runs.astype({**ints, "diverged_step": "Int64"}), curves.astype(ints)
    order = ["study", "method", "lambda", "restart"]
    write_csv(runs.sort_values(order, kind="stable")[RUN_COLUMNS], runs_out)
    write_csv(curves.sort_values([*order, "step"], kind="stable")[CURVE_COLUMNS], curves_out)


#: Accuracy columns of ``runs.csv`` summarised in the tables (mean and std).
ACCURACIES = ("train_acc", "test_acc", "gray_test_acc")


def method_order(method: str) -> int:
    """Display position of a config method: registry order, the oracle last."""
    from irm_bench.methods import METHODS

    names = list(METHODS)
    return names.index(method) if method in names else len(names) + (method != ORACLE)


def _mean_std(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """n_restarts, n_diverged and mean/std (ddof=0) of accuracies over non-diverged rows."""
    frame = frame.assign(diverged=frame["diverged"].astype(bool))
    rows = []
    for key, group in frame.groupby(keys, sort=True, dropna=False):
        ok = group[~group["diverged"]]
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        row.update(n_restarts=len(group), n_diverged=int(group["diverged"].sum()))
        for col in ACCURACIES:  # runs.csv from before the gray test: NaN
            values = ok[col].to_numpy(dtype=float) if col in ok else np.array([np.nan])
            row[f"{col}_mean"] = float(values.mean()) if len(values) else np.nan
            row[f"{col}_std"] = float(values.std(ddof=0)) if len(values) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def summarise(runs_csv: str | Path, accuracy_out: str | Path, sweep_out: str | Path) -> None:
    """Write the accuracy table (one row per protocol, precision, method and λ) and the sweep.

    Means and standard deviations (ddof = 0, as the reference's ``np.std``) are over
    the restarts that did not diverge; ``n_restarts`` counts all restarts and
    ``n_diverged`` the diverged ones.
    """
    runs = pd.read_csv(runs_csv)
    if "precision" not in runs:  # runs.csv from before the precision option
        runs["precision"] = "fp32"
    table1 = runs[runs["study"] == "table1"]
    acc = _mean_std(table1, ["protocol", "precision", "method", "lambda"])
    if len(acc):
        acc = acc.sort_values(
            ["protocol", "method"],
            key=lambda s: s.map(method_order) if s.name == "method" else s != PROTOCOL,
            kind="stable",
        ).reset_index(drop=True)
    sweep = _mean_std(
        runs[runs["study"] == "sweep"],
        ["protocol", "precision", "method", "lambda", "lambda_index"],
    )
    if len(sweep):
        sweep["lambda_index"] = sweep["lambda_index"].astype(int)
        sweep = sweep.sort_values(
            ["method", "lambda"],
            key=lambda s: s.map(method_order) if s.name == "method" else s,
        ).reset_index(drop=True)
    stats = [
        "n_restarts",
        "n_diverged",
        *(f"{c}_{s}" for c in ACCURACIES for s in ("mean", "std")),
    ]
    keys = ["protocol", "precision", "method", "lambda"]
    write_csv(acc.reindex(columns=[*keys, *stats]), accuracy_out)
    sweep_columns = [*keys, "lambda_index", *stats]
    write_csv(sweep.reindex(columns=sweep_columns), sweep_out)
