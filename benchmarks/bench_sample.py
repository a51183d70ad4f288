"""Sampling throughput: characters/second generated one at a time, charlstm vs PyTorch.

    python benchmarks/bench_sample.py [--chars N] [--threads N] [--load]
                                      [--hidden-size 512 --num-layers 2]

Both run the same generation loop (charlstm.sample.generate_ids: temperature 1, one
character per step per stream), with charlstm.model.step or torch.nn.LSTM +
nn.Linear under no_grad as the step function; same weights. Single stream (what
a user generating text sees) and 64 streams at once, measured alternately. The 64
streams of charlstm run as `charlstm sample --num-samples 64 --threads N` draws them
(charlstm.sample.generate_parallel: with numba, the same loop compiled, steps and
draws, in charlstm.fast.stack; split across N engine workers of at least
engine.COMPILED_SLICE_STREAMS streams each, else one loop on an N-thread BLAS); torch
runs all 64 in one loop on N intra-op threads. One stream is one loop for both.
"""

from __future__ import annotations

import argparse

import common  # noqa: F401  (sets BLAS threads before numpy loads)
import numpy as np
from common import add_load_flag, interleaved, median, session, table
from impls import OursTrainer, TorchTrainer, torch_step_fn

from charlstm import engine
from charlstm import model as cm
from charlstm.sample import generate_ids, generate_parallel, numpy_step_fn, stream_rngs

V = 65


def generator(step_fn, state_fn, B, n):
    def run():
        for _ in generate_ids(step_fn, state_fn(), np.array([0]), n, rngs=stream_rngs(0, B)):
            pass

    return run


def parallel_generator(ours, B, n):
    """charlstm's multi-stream sampling, the streams split across the engine's workers."""
    def run():
        generate_parallel(ours.params, ours.config, np.array([0]), n, stream_rngs(0, B))

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chars", type=int, default=400, help="characters per stream per timing")
    ap.add_argument("--repeats", type=int, default=7, help="timings per implementation")
    ap.add_argument("--hidden-size", type=int, default=512)
    ap.add_argument("--num-layers", type=int, default=2)
    ap.add_argument("--threads", type=int, help="BLAS/torch threads (default: all cores)")
    add_load_flag(ap)
    args = ap.parse_args()
    with session(args.load):
        measure(args)


def measure(args) -> None:
    L, H = args.num_layers, args.hidden_size
    print()
    rows = []
    for B in (1, 64):
        ours = OursTrainer(V, H, L, B)
        theirs = TorchTrainer(ours.params, L, B)
        torch = theirs.torch
        n = args.chars if B == 1 else max(50, args.chars // 4)
        serial = generator(numpy_step_fn(ours.params, ours.config),
                           lambda B=B, c=ours.config: cm.zero_state(c, B), B, n)
        fns = {
            "charlstm": serial if B == 1 else parallel_generator(ours, B, n),
            "torch": generator(torch_step_fn(theirs),
                               lambda B=B, tz=torch.zeros: (tz(L, B, H), tz(L, B, H)), B, n),
        }
        times = interleaved(fns, args.repeats)
        cps = {k: B * n / median(v) for k, v in times.items()}
        per = {k: 1e6 * median(v) / n for k, v in times.items()}
        workers = len(engine.stream_slices(B, H, fewest=engine.COMPILED_SLICE_STREAMS))
        rows.append([f"{L}x{H}, {B} stream{'s' if B > 1 else ''} ({workers} worker"
                     f"{'s' if workers > 1 else ''})", f"{cps['charlstm']:,.0f}",
                     f"{cps['torch']:,.0f}", f"**{cps['charlstm'] / cps['torch']:.2f}**",
                     f"{per['charlstm']:.0f} / {per['torch']:.0f}"])
    print(table(["sampling", "charlstm chars/s", "torch chars/s", "ratio",
                 "us per step (charlstm / torch)"], rows))


if __name__ == "__main__":
    main()
