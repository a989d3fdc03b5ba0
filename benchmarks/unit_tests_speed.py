"""Speed of the batched unit-test trainer against a straightforward one-model loop.

Both run in this process on the same data (the paper's sizes: 3 environments of 10,000
examples, 10 features) and are timed side by side per method: the batched trainer on
``trials x data seeds`` models at once, the one-model loop
(:mod:`irm_bench.unit_tests.loop`, ``torch.nn.Linear`` + ``torch.optim.Adam``, autograd
statistics) on one. It prints the time per model-step of each, their ratio, and the
projected wall time of the paper's protocol with one single-threaded job per core:
5 methods x 6 tasks x 50 data seeds x 20 trials x 10,000 steps (the 30,000 jobs of the
main table), and the 630,000 jobs of ``reproduce_results.sh`` (21 such sweeps, varying
the environment count and spurious dimension; projected at the main table's cost).

    PYTHONPATH=. python benchmarks/unit_tests_speed.py [--seeds 2] [--steps 30] [--cores 2]

Timings on a shared machine are noisy; the ratio, measured in one run, is the robust
number.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from irm_bench.methods import get_method
from irm_bench.unit_tests import loop, trainer
from irm_bench.unit_tests.protocol import (
    PUBLISHED_METHODS,
    STUDY_METHODS,
    UnitTestsConfig,
    job_data,
    trial_batch,
    trial_hparams,
)

FULL = {"tasks": 6, "seeds": 50, "trials": 20, "steps": 10_000}
SWEEPS = 21  # 1 main + 9 environment counts + 11 spurious dimensions: 630,000 jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="Example2")
    parser.add_argument(
        "--seeds", type=int, default=2, help="data seeds per batch (seeds_per_chunk)"
    )
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--steps", type=int, default=30, help="steps of each run")
    parser.add_argument("--n-samples", type=int, default=10_000, help="per environment")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--methods", nargs="+", default=list(PUBLISHED_METHODS))
    args = parser.parse_args()
    torch.set_num_threads(1)

    config = UnitTestsConfig.from_config(
        {
            "preset": "full",
            "n_trials": args.trials,
            "n_data_seeds": args.seeds,
            "n_samples": args.n_samples,
        }
    )
    dim = config.dim_inv + config.dim_spu
    print(
        f"task {args.task}, n = {config.n_samples} per environment, {args.steps} steps, "
        f"batched: {args.trials} trials x {args.seeds} seeds, 1 thread"
    )
    print(f"{'method':<10}{'batched s/model-step':>22}{'loop s/step':>14}{'ratio':>9}")
    total_full = 0.0
    for method in args.methods:
        study = STUDY_METHODS[method]
        spec = get_method(study.registry)
        trials = trial_hparams(config, method)
        batch = trial_batch(method, trials, config.n_envs)
        data = [
            job_data(config, args.task, s, study.train_split)[1]["train"]
            for s in range(args.seeds)
        ]
        task_type = "regression" if args.task.startswith("Example1") else "classification"
        x = torch.stack([d[0] for d in data])
        y = torch.stack([d[1] for d in data])
        gens = [torch.Generator().manual_seed(k) for k in range(args.trials)]
        init = trainer.init_models(args.trials, args.seeds, dim, gens)
        trainer.train(spec, batch, init, x, y, task_type, 2)  # warm-up
        start = time.perf_counter()
        trainer.train(spec, batch, init, x, y, task_type, args.steps)
        batched = (time.perf_counter() - start) / (args.steps * args.trials * args.seeds)

        hp = {
            "lr": 1e-3,
            "wd": 0.0,
            "risk_scale": float(batch.risk_scale[0]),
            "penalty_scale": float(batch.penalty_scale[0]),
            "tau": 0.9,
            "eta": 0.01,
        }
        envs = [(x[0, e], y[0, e]) for e in range(config.n_envs)]
        w0, b0 = init.weight[0, 0], init.bias[0, 0].item()
        loop.train_one(study.registry, hp, w0, b0, envs, task_type, 2)  # warm-up
        start = time.perf_counter()
        loop.train_one(
            study.registry,
            hp,
            init.weight[0, 0],
            init.bias[0, 0].item(),
            envs,
            task_type,
            args.steps,
        )
        one = (time.perf_counter() - start) / args.steps
        print(f"{method:<10}{batched:>22.2e}{one:>14.2e}{one / batched:>9.1f}")
        total_full += batched * FULL["tasks"] * FULL["seeds"] * FULL["trials"] * FULL["steps"]
    if args.n_samples != 10_000:
        print("(the projection of the paper's protocol needs --n-samples 10000)")
        return
    hours = total_full / args.cores / 3600
    print(
        f"projected main table ({len(args.methods)} methods, 30,000 jobs) on {args.cores} "
        f"cores: {hours:.1f} h; all 630,000 jobs: {hours * SWEEPS:.0f} h"
    )


if __name__ == "__main__":
    main()
