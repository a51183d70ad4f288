"""Evaluation throughput: forward only over Tiny Shakespeare's validation split.

    python benchmarks/bench_eval.py [--repeats N] [--threads N] [--load]
                                    [--batch-size 50 64 --seq-len 100]

charlstm: charlstm.evaluate, as validation runs (the streams split across --threads
workers of at least engine.fewest_streams(H) streams each, or in blocks of 16 streams
where engine.eval_plan finds that faster, else one worker on an
N-thread BLAS; each worker runs charlstm.fast.stack's compiled step-major loop, or past
engine.STEP_MAJOR_MAX_BYTES of weights model.forward without a cache); PyTorch:
nn.LSTM + nn.Linear under torch.no_grad(). Same weights, same windows, state
carried; both losses are printed as a check that the two computed the same thing.
"""

from __future__ import annotations

import argparse

import common  # noqa: F401  (sets BLAS threads before numpy loads)
from common import add_load_flag, interleaved, median, read_corpus, session, table
from impls import OursTrainer, TorchTrainer, torch_eval

from charlstm import engine
from charlstm.evaluate import evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per implementation")
    ap.add_argument("--hidden-size", type=int, default=512)
    ap.add_argument("--num-layers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, nargs="+", default=[50, 64],
                    help="one row per batch size (default: 50 and 64)")
    ap.add_argument("--seq-len", type=int, default=100)
    ap.add_argument("--threads", type=int, help="charlstm workers and torch threads "
                    "(default: all cores)")
    add_load_flag(ap)
    args = ap.parse_args()
    with session(args.load):
        measure(args)


def measure(args) -> None:
    _, val, V = read_corpus()
    print()
    rows = [row(val, V, args.num_layers, args.hidden_size, B, args.seq_len, args.repeats)
            for B in args.batch_size]
    print(table(["evaluation", "charlstm chars/s", "torch chars/s", "ratio",
                 "loss charlstm / torch (nats)"], rows))


def row(val, V, L, H, B, T, repeats) -> list[str]:
    """One table row: both implementations over the whole validation split."""
    ours = OursTrainer(V, H, L, B)
    theirs = TorchTrainer(ours.params, L, B)
    loss = {}
    fns = {
        "charlstm": lambda: loss.__setitem__("charlstm", evaluate(ours.params, ours.config,
                                                                   val, B, T)),
        "torch": lambda: loss.__setitem__("torch", torch_eval(theirs, val, B, T)),
    }
    # Warm up on a few windows, not a whole pass: the first call loads (or compiles)
    # numba's kernels and would otherwise count in the first timing.
    head = val[:2 * B * T + 1]
    evaluate(ours.params, ours.config, head, B, T)
    torch_eval(theirs, head, B, T)
    times = interleaved(fns, repeats, warmup=0)
    n = len(val) - 1
    cps = {k: n / median(v) for k, v in times.items()}
    return [f"{L}x{H} B{B} T{T}, {n:,} val chars, {len(engine.stream_slices(B, H))} "
            "charlstm workers", f"{cps['charlstm']:,.0f}", f"{cps['torch']:,.0f}",
            f"**{cps['charlstm'] / cps['torch']:.2f}**",
            f"{loss['charlstm']:.5f} / {loss['torch']:.5f}"]


if __name__ == "__main__":
    main()
