"""Speed of the batched SEM trainer against a straightforward one-model autograd loop.

Both run in this process on the same problem (draws of one setup, the default reg grid)
and are timed side by side; the script prints time per model-step of each, their ratio,
the time of ICP and ERM per draw, and the projected wall time of the full Figure 4
protocol (8 setups x 200 draws x 6 reg values x 100,000 steps, plus ICP and ERM) with
one single-threaded job per core.

Then, for every other gradient method of the registry that runs in the SEM study (the
generic batched trainer, irm_bench/sem/trainer.py: V-REx, Fishr, GroupDRO, ...), the
same side by side (batched trainer with the method's default grid, one-model autograd
loop on raw samples) and the projected CPU time of the default study's part for it
(8 setups x 200 draws x grid x its configured steps).

    PYTHONPATH=. python benchmarks/sem_speed.py [--draws 200] [--steps 2000] [--cores 2]

Timings on a shared machine are noisy; the ratio, measured in one run, is the robust
number.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from irm_bench.envs.moments import LinearMoments
from irm_bench.methods import methods_for
from irm_bench.methods.erm import ERM
from irm_bench.methods.icp import ICP
from irm_bench.methods.irm_linear import IRMv1Config, train_batched, train_one_autograd
from irm_bench.sem import trainer as generic
from irm_bench.sem.study import SEMStudyConfig, draw_environments

FULL = {"setups": 8, "draws": 200, "regs": 6, "steps": 100_000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", default="FES")
    parser.add_argument("--draws", type=int, default=200, help="draws in the batched run")
    parser.add_argument("--steps", type=int, default=2000, help="steps of the batched run")
    parser.add_argument("--one-steps", type=int, default=500, help="steps of the one-model loop")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(1)

    config = SEMStudyConfig(setups=(args.setup,), n_draws=args.draws, draws_per_job=args.draws)
    envs = [draw_environments(args.setup, k, config)[1] for k in range(args.draws)]
    moments = LinearMoments.stack([LinearMoments.from_samples(e) for e in envs])
    train = moments.envs([0, 1])
    regs = config.irmv1.reg_grid
    irm = IRMv1Config(steps=args.steps)

    train_batched(train, regs, IRMv1Config(steps=5))  # warm-up (lazy torch initialisation)
    result = train_batched(train, regs, irm)
    batched = result.seconds / (args.steps * args.draws * len(regs))

    pairs = [
        (torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
        for x, y in envs[0][:2]
    ]
    start = time.perf_counter()
    train_one_autograd(pairs, reg=1e-3, steps=args.one_steps)
    one = (time.perf_counter() - start) / args.one_steps

    start = time.perf_counter()
    ICP().fit(moments)
    icp = (time.perf_counter() - start) / args.draws
    start = time.perf_counter()
    ERM().fit(moments)
    erm = (time.perf_counter() - start) / args.draws

    model_steps = FULL["setups"] * FULL["draws"] * FULL["regs"] * FULL["steps"]
    n_draws = FULL["setups"] * FULL["draws"]
    cpu = model_steps * batched + n_draws * (icp + erm)
    print(f"problem: setup {args.setup}, {args.draws} draws x {len(regs)} regs, d=10, n=1000")
    print(f"batched trainer : {batched * 1e9:9.1f} ns per model-step ({args.steps} steps)")
    print(f"one-model loop  : {one * 1e9:9.1f} ns per model-step ({args.one_steps} steps)")
    print(f"ratio           : {one / batched:9.1f}x")
    print(f"ICP per draw    : {icp * 1e3:9.2f} ms    ERM per draw: {erm * 1e6:.1f} us")
    print(
        f"full protocol   : {cpu / 60:.1f} CPU-minutes -> {cpu / args.cores / 60:.1f} min "
        f"wall on {args.cores} cores (plus ~10 s start-up per job); "
        f"one-model loop: {(model_steps * one + n_draws * icp) / 3600:.0f} CPU-hours"
    )
    print(f"diverged in batched run: {int(np.sum(result.diverged))}")
    generic_methods(args, envs)


def generic_methods(args: argparse.Namespace, envs: list) -> None:
    """Per-method us per model-step of the generic trainer beside the one-model loop."""
    import yaml

    with open(os.path.join(os.path.dirname(__file__), "..", "config.yaml")) as fh:
        section = yaml.safe_load(fh)["sem"]
    config = SEMStudyConfig.from_mapping(section)
    moments = LinearMoments.stack([LinearMoments.from_samples(e[:2], fourth=True) for e in envs])
    pairs = [(torch.tensor(x), torch.tensor(y)) for x, y in envs[0][:2]]  # float64 samples
    total = 0.0
    print("\ngeneric trainer (CPU time per model-step; one-model loop in float64 on raw samples)")
    print(f"{'method':10s} {'batched us':>11s} {'one-model us':>13s} {'ratio':>7s} "
          f"{'grid':>5s} {'steps':>6s} {'default study CPU-min':>22s}")  # fmt: skip
    for name, spec in methods_for("sem").items():
        if spec.linear_fit is not None or name not in config.gradient:
            continue
        block = config.gradient[name]
        short = generic.GradientSEMConfig(**{**block.__dict__, "steps": 5})
        generic.train_gradient_batched(spec, moments, short)  # warm-up
        timed = generic.GradientSEMConfig(**{**block.__dict__, "steps": args.steps // 4})
        # CPU time of this (single-threaded) process: robust to other jobs sharing cores.
        start = time.process_time()
        generic.train_gradient_batched(spec, moments, timed)
        per = (time.process_time() - start) / (timed.steps * args.draws * len(block.grid))
        start = time.process_time()
        generic.train_one_autograd(
            spec, pairs, block.point_hparams(spec, 0), block.point_lambda(spec, 0),
            steps=args.one_steps // 5, lr=block.lr,
        )  # fmt: skip
        one = (time.process_time() - start) / (args.one_steps // 5)
        cpu = FULL["setups"] * FULL["draws"] * len(block.grid) * block.steps * per
        total += cpu
        print(f"{name:10s} {per * 1e6:11.2f} {one * 1e6:13.1f} {one / per:6.0f}x "
              f"{len(block.grid):5d} {block.steps:6d} {cpu / 60:22.2f}")  # fmt: skip
    print(f"generic-trainer methods in the default study: {total / 60:.2f} CPU-minutes")


if __name__ == "__main__":
    main()
