"""Colored MNIST step time: ours vs a straightforward autograd step vs the matmul ceiling.

In one run, on the same data (real MNIST, full 25,000 images per training environment):

1. the fp32 matmul ceiling (GFLOP/s) of this machine, best of a few large products;
2. our training step of each method (colour-split first layer, closed-form IRMv1
   dummy-scale gradient and Fishr last-layer gradient variances), the trainer's own
   ``step_objective``;
3. a reference-style step (two-channel 392-wide input, statistics by autograd with
   ``create_graph=True``, i.e. a double backward), as the public reference codes do it;

interleaved so that load from other processes hits both alike. First of all it times
the trainer's two step engines side by side (whole-batch autograd, the previous
trainer, and the chunked engine, the current one on the CPU; one model alone and three
stacked, as after the IRMv1 job's penalty-weight fork), with each engine's fraction of
the ceiling, and projects the ``default`` and ``paper`` presets' training time with the
chunked engine (``--only-engines`` stops there). Prints achieved GFLOP/s,
the fraction of the ceiling, the speed-up, each method's step time beside IRMv1's
(target for V-REx and Fishr: within 1.2x), and the implied time of the full ``paper``
preset against its structural bound (its matmul FLOPs at the ceiling).

It then times every method's step in fp32 and under the ``bf16`` precision option and
projects the ``default`` and ``paper`` presets three ways: one job per IRMv1 λ (the
trainer before the penalty-weight fork), the fork (the current fp32 trainer: the 190
steps before the anneal trained once per restart) and the fork with bf16.

With ``--compile`` it also times, side by side, the fp32 step eager and under
``torch.compile`` (inductor, the CPU wheel's default backend), and prints the one-off
compile time beside the per-step saving, i.e. how many steps a job needs before
compiling pays.

Usage: ``PYTHONPATH=. python benchmarks/cmnist_speed.py`` (MNIST from ``data/mnist``, the
product's cache, fetched if missing; ``--mnist-source DIR`` to use a local copy).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from irm_bench.cmnist.chunked import chunked_objective, prepare_inputs
from irm_bench.cmnist.model import N_PIXELS, init_mlp, pack_envs
from irm_bench.cmnist.presets import PAPER_HPARAMS, PRESETS, MethodHparams, build_plan
from irm_bench.cmnist.reference import ReferenceMLP, irmv1_penalty_autograd, reference_loss
from irm_bench.cmnist.train import keep_freed_memory, step_objective, tile_envs
from irm_bench.envs.cmnist import TRAIN_ENVS, data_seed, make_environments
from irm_bench.mnist import fetch_mnist, load_mnist_train


def matmul_ceiling(repeats: int = 3) -> float:
    """Best fp32 GFLOP/s over a square product and the study's largest layer shape."""
    best = 0.0
    for m, k, n in ((4096, 4096, 4096), (50_000, 390, 390)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        a @ b
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = max(best, 2 * m * k * n / (time.perf_counter() - start) / 1e9)
    return best


def step_flops(n: int, h: int, d_in: int) -> float:
    """Matmul FLOPs of one training step on n samples with first-layer width d_in.

    Forward 2n(d_in·h + h² + h); backward: weight gradients (same again) and input
    gradients of layers 2 and 3, 2n(h² + h). Elementwise work is not counted.
    """
    fwd = 2 * n * (d_in * h + h * h + h)
    return fwd + fwd + 2 * n * (h * h + h)


def forward_flops(n: int, h: int, d_in: int) -> float:
    """Matmul FLOPs of one forward pass."""
    return 2 * n * (d_in * h + h * h + h)


def our_step(
    model, train, hp: MethodHparams, step: int, state=None, engine: str = "autograd", inputs=None
):
    """One step of our loss and its gradient, by the trainer's autograd step
    (``step_objective``) or its chunked engine (``inputs``: ``prepare_inputs(train)``,
    prepared once as the trainer does); returns the method's state."""
    if engine == "chunked":
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        lam = torch.full((model.n_models,), hp.penalty_weight_at(step))
        active = torch.ones(model.n_models, dtype=torch.bool)
        _, _, terms, backward = chunked_objective(
            model, train, hp, lam, state, active=active, inputs=inputs
        )
        backward()
        return terms.state
    loss, _, terms = step_objective(model, train, hp, step, state)
    loss.sum().backward()
    return terms.state


def engine_comparison(train, methods: list[str], repeats: int, ceiling: float, n: int) -> dict:
    """Autograd vs chunked step per method, one model alone and three stacked (the
    IRMv1 job after its penalty-weight fork), rounds interleaved. Returns the chunked
    engine's seconds per model-step, ``{(method, R): s}``."""
    per_model = {}
    for method in methods:
        hp = dataclasses.replace(PRESETS["default"].hparams_for(method), penalty_anneal_steps=0)
        for R in (1, 3):
            data = tile_envs(train, R)
            inputs = prepare_inputs(data)
            model = init_mlp(list(range(R)), hp.hidden_dim, hp.grayscale)
            for p in model.parameters():
                p.requires_grad_(True)
            t = {"autograd": [], "chunked": []}
            for i in range(repeats + 1):  # first round is warm-up
                for engine in t:
                    start = time.perf_counter()
                    our_step(model, data, hp, 1000, engine=engine, inputs=inputs)
                    if i:
                        t[engine].append((time.perf_counter() - start) / R)
            auto, chunk = statistics.median(t["autograd"]), statistics.median(t["chunked"])
            per_model[method, R] = chunk
            width = -(-hp.hidden_dim // 16) * 16  # the stored (padded) width
            frac = step_flops(n, width, N_PIXELS) / chunk / 1e9 / ceiling
            print(
                f"{method:9s} h={hp.hidden_dim} R={R}: autograd {1000 * auto:6.1f}, chunked "
                f"{1000 * chunk:6.1f} ms per model-step ({auto / chunk:.2f}x); chunked at "
                f"{frac:.0%} of the ceiling"
            )
    return per_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist-source", default=None, help="local folder of MNIST files")
    parser.add_argument("--cache-dir", default="data/mnist", help="MNIST cache (the product's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per variant")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--methods", nargs="+", default=["irmv1", "vrex", "fishr", "erm"])
    parser.add_argument(
        "--skip-reference", action="store_true", help="only the side-by-side step times"
    )
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile against eager"
    )
    parser.add_argument(
        "--only-compile", action="store_true", help="only the torch.compile comparison"
    )
    parser.add_argument(
        "--only-engines", action="store_true", help="only autograd vs chunked, and projections"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    cache = args.cache_dir
    fetch_mnist(cache, local_source=args.mnist_source)
    envs = make_environments(load_mnist_train(cache), data_seed(0, 0))
    train = pack_envs([envs], TRAIN_ENVS)
    ref_data = [(envs[e].images(), envs[e].labels) for e in TRAIN_ENVS]
    test_images, test_labels = envs["test"].images(), envs["test"].labels
    n = sum(len(envs[e]) for e in TRAIN_ENVS)

    if args.compile or args.only_compile:
        compile_probe(train, args.methods, args.repeats)
        if args.only_compile:
            return
    ceiling = matmul_ceiling()
    print(f"threads {args.threads}; fp32 matmul ceiling {ceiling:.1f} GFLOP/s")
    chunked = engine_comparison(train, [*args.methods, "grayscale"], args.repeats, ceiling, n)
    project_chunked(chunked, ceiling, n)
    if args.only_engines:
        return
    per_step = {}
    for method in [] if args.skip_reference else args.methods:
        # penalty switched on from step 0, as after annealing (the costliest steps)
        hp = dataclasses.replace(PRESETS["default"].hparams_for(method), penalty_anneal_steps=0)
        model = init_mlp([1], hp.hidden_dim, hp.grayscale)
        for p in model.parameters():
            p.requires_grad_(True)
        # the straightforward model has the plain width (no padding to a multiple of 16)
        ref = ReferenceMLP(init_mlp([1], hp.hidden_dim, hp.grayscale, pad_to=1), 0)
        ours_t, ref_t = [], []
        state = None
        for i in range(args.repeats + 1):  # first round is warm-up
            start = time.perf_counter()
            state = our_step(model, train, hp, 1000, state)
            t_ours = time.perf_counter() - start
            start = time.perf_counter()
            reference_loss(ref, ref_data, hp, step=1000).backward()
            # the reference also evaluates the test environment (with its penalty) every step
            irmv1_penalty_autograd(ref(test_images), test_labels)
            t_ref = time.perf_counter() - start
            if i:
                ours_t.append(t_ours)
                ref_t.append(t_ref)
        ours, refm = statistics.median(ours_t), statistics.median(ref_t)
        d_in = N_PIXELS
        flops = step_flops(n, hp.hidden_dim, d_in)
        achieved = flops / ours / 1e9
        per_step[method] = ours
        print(
            f"{method:9s} h={hp.hidden_dim}: ours {1000 * ours:7.1f} ms/step, "
            f"autograd reference {1000 * refm:7.1f} ms/step, speed-up {refm / ours:.2f}x; "
            f"ours {achieved:.1f} GFLOP/s = {achieved / ceiling:.0%} of the ceiling"
        )

    # Side by side: our steps of the hidden-390 methods interleaved round by round, so
    # that load from other processes hits each alike; median ratio to IRMv1's step.
    same_width = [m for m in args.methods if PRESETS["default"].hparams_for(m).hidden_dim == 390]
    if "irmv1" in same_width:
        setups = {}
        for method in same_width:
            hp = PRESETS["default"].hparams_for(method)
            hp = dataclasses.replace(hp, penalty_anneal_steps=0)
            model = init_mlp([1], hp.hidden_dim, hp.grayscale)
            for p in model.parameters():
                p.requires_grad_(True)
            setups[method] = (model, hp)
        ratios: dict[str, list[float]] = {m: [] for m in same_width}
        times: dict[str, list[float]] = {m: [] for m in same_width}
        for i in range(2 * args.repeats + 1):  # first round is warm-up
            round_t = {}
            for method, (model, hp) in setups.items():
                start = time.perf_counter()
                our_step(model, train, hp, 1000)
                round_t[method] = time.perf_counter() - start
            if i:
                for method, t in round_t.items():
                    times[method].append(t)
                    ratios[method].append(t / round_t["irmv1"])
        print(
            "side by side, ms/step (ratio to IRMv1, median of interleaved rounds; target "
            "<= 1.2 for V-REx and Fishr): "
            + ", ".join(
                f"{m} {1000 * statistics.median(times[m]):.1f} "
                f"({statistics.median(ratios[m]):.2f}x)"
                for m in same_width
            )
        )

    # Structural bound: matmul FLOPs at the ceiling (training steps, test forwards at
    # logged steps), for Table 1 alone and for the whole paper preset (Table 1 + λ grid).
    paper = PRESETS["paper"]
    table1 = [(m, paper.restarts) for m in ("erm", "irmv1", "grayscale")]
    extra_sweep = [("irmv1", paper.sweep_restarts)] * (len(paper.lambda_grid) - 1)
    for label, runs in (("Table 1", table1), ("paper preset", table1 + extra_sweep)):
        total_flops = ours_estimate = 0.0
        for method, restarts in runs:
            hp = PAPER_HPARAMS[method]
            flops = hp.steps * step_flops(n, hp.hidden_dim, N_PIXELS)
            flops += (hp.steps // 10 + 1) * forward_flops(10_000, hp.hidden_dim, N_PIXELS)
            total_flops += restarts * flops
            ours_estimate += restarts * hp.steps * per_step.get(method, 0.0)
        bound_min = total_flops / (ceiling * 1e9) / 60
        line = f"{label}: {total_flops / 1e12:.0f} TFLOP, bound at the ceiling {bound_min:.1f} min"
        if set(per_step) >= {"irmv1", "erm"}:
            line += (
                f"; at our step times {ours_estimate / 60:.1f} min "
                f"= {ours_estimate / 60 / bound_min:.2f}x the bound (oracle not timed)"
            )
        print(line)

    projections(train, args.repeats)


def _time_step(model, train, hp: MethodHparams, repeats: int) -> float:
    for p in model.parameters():
        p.requires_grad_(True)
    times = []
    for i in range(repeats + 1):  # first is warm-up
        start = time.perf_counter()
        our_step(model, train, hp, 1000)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _loss_sum(model, train, hp: MethodHparams, step: int):
    loss, _, _ = step_objective(model, train, hp, step, None)
    return loss.sum()


def compile_probe(train, methods: list[str], repeats: int) -> None:
    """Eager vs ``torch.compile`` fp32 step (forward and backward) per method, rounds
    interleaved; prints the compile time and the steps needed to recover it."""
    for method in methods:
        hp = dataclasses.replace(PRESETS["default"].hparams_for(method), penalty_anneal_steps=0)
        model = init_mlp([1], hp.hidden_dim, hp.grayscale)
        for p in model.parameters():
            p.requires_grad_(True)
        compiled = torch.compile(_loss_sum)
        start = time.perf_counter()
        compiled(model, train, hp, 1000).backward()
        compile_s = time.perf_counter() - start
        eager_t, compiled_t = [], []
        for i in range(2 * repeats + 1):  # first round is warm-up
            start = time.perf_counter()
            _loss_sum(model, train, hp, 1000).backward()
            t_eager = time.perf_counter() - start
            start = time.perf_counter()
            compiled(model, train, hp, 1000).backward()
            t_compiled = time.perf_counter() - start
            if i:
                eager_t.append(t_eager)
                compiled_t.append(t_compiled)
        eager, fast = statistics.median(eager_t), statistics.median(compiled_t)
        saving = eager - fast
        pays = f"pays after {compile_s / saving:.0f} steps" if saving > 0 else "never pays"
        print(
            f"{method:9s} torch.compile: eager {1000 * eager:7.1f} ms/step, compiled "
            f"{1000 * fast:7.1f} ms/step ({eager / fast:.2f}x); first call (compile) "
            f"{compile_s:.1f} s, {pays} (a default-preset job trains 501)"
        )


def project_chunked(per_model: dict, ceiling: float, n: int) -> None:
    """Training time of the default and paper presets with the chunked engine (the
    trainer's default on the CPU): shared pre-fork steps at R=1, forked ones at R=3;
    beside it the presets' training matmul FLOPs (padded widths, colour-split first
    layer) and their time at the ceiling."""
    for preset in ("default", "paper"):
        total = flops = 0.0
        for job in build_plan({"preset": preset}).jobs.values():
            hp, n_points = job.hparams, len(job.points)
            shared = min(hp.penalty_anneal_steps, hp.steps) if n_points > 1 else 0
            stacked = per_model[job.method, 3 if n_points > 1 else 1]
            alone = per_model[job.method, 1]
            total += job.restarts * (shared * alone + n_points * (hp.steps - shared) * stacked)
            width = -(-hp.hidden_dim // 16) * 16
            model_steps = job.restarts * (shared + n_points * (hp.steps - shared))
            flops += model_steps * step_flops(n, width, N_PIXELS)
        bound = flops / (ceiling * 1e9) / 60
        print(
            f"preset {preset}, chunked fp32 engine, training only: {total / 60:.1f} min; "
            f"{flops / 1e12:.0f} TFLOP of training matmuls, {bound:.1f} min at the ceiling "
            f"({bound / (total / 60):.0%} of it reached)"
        )


def projections(train, repeats: int) -> None:
    """fp32 vs bf16 step per method, and the presets before / after the fork, per precision."""
    step = {}
    for method in ("erm", "irmv1", "vrex", "fishr", "grayscale"):
        hp = dataclasses.replace(PRESETS["default"].hparams_for(method), penalty_anneal_steps=0)
        for precision in ("fp32", "bf16"):
            model = init_mlp([1], hp.hidden_dim, hp.grayscale, precision=precision)
            step[method, precision] = _time_step(model, train, hp, repeats)
        print(
            f"{method:9s} h={hp.hidden_dim}: fp32 {1000 * step[method, 'fp32']:7.1f} ms/step, "
            f"bf16 {1000 * step[method, 'bf16']:7.1f} ms/step "
            f"({step[method, 'fp32'] / step[method, 'bf16']:.2f}x)"
        )
    for preset in ("default", "paper"):
        plan = build_plan({"preset": preset})
        cost = {"per-λ jobs, fp32": 0.0, "fork, fp32": 0.0, "fork, bf16": 0.0}
        for job in plan.jobs.values():
            hp, n_points = job.hparams, len(job.points)
            shared = min(hp.penalty_anneal_steps, hp.steps) if n_points > 1 else 0
            forked = job.restarts * (shared + n_points * (hp.steps - shared))
            unforked = job.restarts * n_points * hp.steps
            cost["per-λ jobs, fp32"] += unforked * step[job.method, "fp32"]
            cost["fork, fp32"] += forked * step[job.method, "fp32"]
            cost["fork, bf16"] += forked * step[job.method, "bf16"]
        print(
            f"preset {preset} ({', '.join(plan.jobs)}), training only: "
            + "; ".join(f"{k} {v / 60:.1f} min" for k, v in cost.items())
            + f" (fork saves {1 - cost['fork, fp32'] / cost['per-λ jobs, fp32']:.0%})"
        )


if __name__ == "__main__":
    main()
