"""Training-step throughput: charlstm vs torch.nn.LSTM, alternated in one run.

    python benchmarks/bench_train.py [--repeats N] [--threads N] [--load]
                                     [--configs 2x512:64:100 ...]

One step = forward + backward + global-norm clip (5) + Adam, float32, vocabulary 65,
hidden state carried between windows; each timed call runs as many steps as last about
MIN_CALL_S (0.25 s). Prints a markdown table: median chars/s of
each, the ratio, matmul GFLOP/s and its fraction of the float32 GEMM peak measured
in the same run, and the peak memory of each (RSS growth in a fresh process).
"""

from __future__ import annotations

import argparse
import sys
import time

import common  # noqa: F401  (sets BLAS threads before numpy loads)
import numpy as np
from common import (
    add_load_flag,
    interleaved,
    measure_peak_growth,
    median,
    peak_gemm_gflops,
    run_child,
    session,
    table,
    train_flops,
)

V = 65  # 1x384 B32 T64 is the default model (charlstm train)
# The presets' shapes (1x384, 1x512, 1x768: small, medium, large), a wider single layer,
# and the stacks the docs' recipes train.
CONFIGS = ["1x128:32:64", "1x384:32:64", "1x512:32:64", "1x768:32:64", "1x1024:32:64",
           "2x256:32:64", "2x512:64:100", "3x512:50:50"]


def parse_config(text: str) -> tuple[int, int, int, int]:
    """"LxH:B:T" -> (L, H, B, T)."""
    size, B, T = text.split(":")
    L, H = size.split("x")
    return int(L), int(H), int(B), int(T)


def windows(B, T, n=4, seed=0):
    """n random (x, y) windows of ids, cycled through by the steps."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, V, size=(n * T + 1, B))
    return [(data[k * T:(k + 1) * T], data[k * T + 1:(k + 1) * T + 1]) for k in range(n)]


def trainers(L, H, B):
    from impls import OursTrainer, TorchTrainer

    ours = OursTrainer(V, H, L, B)
    return ours, TorchTrainer(ours.params, L, B)


# A timed call runs enough steps to last about this long: a single step of a small
# model (5 ms at 1x128) is at the mercy of every hiccup of a shared machine.
MIN_CALL_S = 0.25


def stepper(trainer, batches, steps=1):
    """A call that runs `steps` training steps, cycling through the windows."""
    it = iter(range(10**12))

    def run():
        for _ in range(steps):
            x, y = batches[next(it) % len(batches)]
            trainer.step(x, y)

    return run


def child(impl: str, config: str) -> None:
    """Peak RSS growth of building the model + optimizer and 3 training steps."""
    L, H, B, T = parse_config(config)
    batches = windows(B, T)
    holder = {}

    def setup():
        from impls import OursTrainer, TorchTrainer

        holder["cls"] = OursTrainer if impl == "ours" else TorchTrainer
        if impl == "torch":
            holder["params"] = OursTrainer(V, H, L, B).params  # weights only, built before

    def work():
        args = (V, H, L, B) if impl == "ours" else (holder["params"], L, B)
        t = holder["cls"](*args)
        for k in range(3):
            t.step(*batches[k % len(batches)])

    print(f'{{"peak_mb": {measure_peak_growth(setup, work):.1f}}}')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=0,
                    help="timed steps per implementation (default: about 5 s of work each)")
    ap.add_argument("--configs", nargs="+", default=CONFIGS, help="LxH:B:T entries")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    ap.add_argument("--threads", type=int, help="charlstm workers and torch threads "
                    "(default: all cores)")
    add_load_flag(ap)
    ap.add_argument("--child", choices=["ours", "torch"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.configs[0])
        return
    with session(args.load):
        measure(args)


def measure(args) -> None:
    peak = peak_gemm_gflops()
    best = max(peak.values())
    print(f"float32 GEMM peak (2048^3): numpy {peak['numpy']:.0f} GFLOP/s, "
          f"torch {peak['torch']:.0f} GFLOP/s; fractions below use {best:.0f}\n")
    rows = []
    for config in args.configs:
        L, H, B, T = parse_config(config)
        ours, theirs = trainers(L, H, B)
        batches = windows(B, T)
        once = stepper(ours, batches)
        once()
        t0 = time.perf_counter()
        once()
        est = time.perf_counter() - t0
        steps = max(1, round(MIN_CALL_S / max(est, 1e-4)))
        fns = {"charlstm": stepper(ours, batches, steps),
               "torch": stepper(theirs, batches, steps)}
        repeats = args.repeats or max(5, min(40, int(5.0 / max(est * steps, 1e-3))))
        times = interleaved(fns, repeats, warmup=2)
        cps = {k: steps * B * T / median(v) for k, v in times.items()}
        flops = train_flops(V, H, L)
        mem = {"charlstm": "-", "torch": "-"}
        if not args.no_memory:
            for impl, name in (("ours", "charlstm"), ("torch", "torch")):
                mb = run_child(__file__, ["--child", impl, "--configs", config])["peak_mb"]
                mem[name] = f"{mb:.0f}"
        gf = {k: flops * c / 1e9 for k, c in cps.items()}
        rows.append([f"{L}x{H} B{B} T{T}", f"{cps['charlstm']:,.0f}", f"{cps['torch']:,.0f}",
                     f"**{cps['charlstm'] / cps['torch']:.2f}**",
                     f"{gf['charlstm']:.0f} ({gf['charlstm'] / best:.0%})",
                     f"{gf['torch']:.0f} ({gf['torch'] / best:.0%})",
                     mem["charlstm"], mem["torch"], f"{repeats} x {steps}"])
        print(f"  {config}: done", file=sys.stderr)
    print(table(["config", "charlstm chars/s", "torch chars/s", "ratio",
                 "charlstm GFLOP/s (of peak)", "torch GFLOP/s (of peak)",
                 "charlstm peak MiB", "torch peak MiB", "timings x steps"], rows))


if __name__ == "__main__":
    main()
