"""Time to quality: charlstm and PyTorch trained for the same wall-clock budget on
Tiny Shakespeare with identical hyperparameters, then both evaluated on the
validation split.

    python benchmarks/bench_quality.py [--budget SECONDS] [--threads N] [--load]
        [--num-layers 2 --hidden-size 512 --batch-size 64 --seq-len 100]

Same initial weights, Adam (lr 2e-3), global-norm clip 5, float32, the same
truncated-BPTT windows (B contiguous streams of the 90% training split, windows of
T, state carried, reset at each epoch). The two trainings are interleaved in one
process, in turns of BLOCK_S seconds of steps (a step right after the other
implementation's runs slower than in steady state, see common.SETTLE_S, so turns
are not single steps), each stopping when ITS OWN accumulated step time reaches the
budget, so both see the same machine load. Evaluation time is not counted. charlstm
trains on --threads engine workers (the streams split across them, see
charlstm.engine), torch on --threads intra-op threads.
"""

from __future__ import annotations

import argparse
import time

import common  # noqa: F401  (sets BLAS threads before numpy loads)
from common import add_load_flag, read_corpus, session, table
from impls import OursTrainer, TorchTrainer, torch_eval

from charlstm import engine
from charlstm.data import Batches, Cursor
from charlstm.evaluate import evaluate

BLOCK_S = 5.0  # seconds of one implementation's steps before the other's turn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=300.0,
                    help="training seconds for EACH implementation (default 300)")
    ap.add_argument("--hidden-size", type=int, default=256)
    ap.add_argument("--num-layers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, help="charlstm workers and torch threads "
                    "(default: all cores)")
    add_load_flag(ap)
    args = ap.parse_args()
    with session(args.load):
        measure(args)


def measure(args) -> None:
    train, val, V = read_corpus()
    L, H, B, T = args.num_layers, args.hidden_size, args.batch_size, args.seq_len
    print()
    ours = OursTrainer(V, H, L, B, lr=args.lr)
    theirs = TorchTrainer(ours.params, L, B, lr=args.lr)
    batches = Batches(train, B, T)
    x, y = batches.get(Cursor())
    for warm in (OursTrainer(V, H, L, B), TorchTrainer(ours.params, L, B)):
        warm.step(x, y)  # JIT compilation and first-call set-up are not training time
    runs = {"charlstm": [ours, Cursor(), 0.0, 0, 0.0],  # trainer, cursor, seconds, steps, loss
            "torch": [theirs, Cursor(), 0.0, 0, 0.0]}
    while any(r[2] < args.budget for r in runs.values()):
        for run in runs.values():
            trainer = run[0]
            turn_end = min(args.budget, run[2] + BLOCK_S)
            while run[2] < turn_end:
                if run[1].window == 0:
                    trainer.reset_state(B)
                x, y = batches.get(run[1])
                t0 = time.perf_counter()
                run[4] = trainer.step(x, y)
                run[2] += time.perf_counter() - t0
                run[1], run[3] = batches.advance(run[1]), run[3] + 1
    val_loss = {"charlstm": evaluate(ours.params, ours.config, val, 64, 100),
                "torch": evaluate(theirs.params_numpy(), ours.config, val, 64, 100)}
    # PyTorch's own evaluation of its weights, as a cross-check of the line above
    torch_own = torch_eval(theirs, val, 64, 100)
    rows = []
    for name, run in runs.items():
        rows.append([name, f"{run[2]:.0f}", f"{run[3]:,}", f"{run[3] * B * T / run[2]:,.0f}",
                     f"{batches.epoch_progress(run[1]):.2f}", f"{run[4]:.3f}",
                     f"**{val_loss[name]:.4f}**"])
    print(f"{L}x{H} B{B} T{T}, Adam lr {args.lr}, clip 5, budget {args.budget:.0f} s each, "
          f"{len(engine.stream_slices(B, H))} charlstm workers\n")
    print(table(["implementation", "train s", "steps", "chars/s", "epochs", "last train loss",
                 "val loss (nats/char)"], rows))
    print(f"\n(PyTorch's own evaluation of its final weights: {torch_own:.4f})")


if __name__ == "__main__":
    main()
