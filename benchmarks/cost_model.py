"""Data-parallel cost model on paper: per-step all-reduce bytes against step time.

    python benchmarks/cost_model.py [--gflops 160] [--vocab 65] [--latency-us 30]

For each model: parameters P (charlstm.model.param_shapes), the float32 gradient an
all-reduce sums (4P bytes), and one rank's step time from FLOPs (benchmarks/common.py's
train_flops: 3x the forward's matrix-multiply FLOPs a character) at --gflops, the
one-thread rate measured in benchmarks/latest.md. A ring all-reduce over n ranks sends
and receives 2(n-1)/n x 4P bytes per rank in 2(n-1) messages; the step's gradient sum
starts after the backward (no overlap), so efficiency = compute / (compute + comm).
Two ways to add machines: weak (every rank keeps B streams, the global batch grows n
times) and strong (a global batch of B streams split n ways: B/n per rank).
"""

from __future__ import annotations

import argparse

import common  # noqa: F401  (sets BLAS threads before numpy loads)
from common import train_flops

from charlstm.config import ModelConfig
from charlstm.model import param_shapes

MODELS = [(1, 384, 32, 64), (1, 512, 32, 64), (1, 768, 32, 64), (2, 1024, 64, 100),
          (3, 1536, 64, 100)]  # L, H, B, T: the presets (small, medium, large) and beyond
RANKS = (2, 8, 64)
LINKS_GBPS = (10, 100)


def n_params(L: int, H: int, V: int) -> int:
    shapes = param_shapes(ModelConfig(vocab_size=V, hidden_size=H, num_layers=L))
    total = 0
    for shape in shapes.values():
        size = 1
        for d in shape:
            size *= d
        total += size
    return total


def comm_seconds(P: int, n: int, gbps: float, latency_s: float) -> float:
    """A ring all-reduce of 4P bytes over n ranks on links of gbps each way."""
    return 2 * (n - 1) / n * 4 * P * 8 / (gbps * 1e9) + 2 * (n - 1) * latency_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gflops", type=float, default=160.0, help="one rank's GFLOP/s")
    ap.add_argument("--vocab", type=int, default=65)
    ap.add_argument("--latency-us", type=float, default=30.0, help="per message")
    args = ap.parse_args()
    lat = args.latency_us * 1e-6
    print(f"V={args.vocab}, {args.gflops:g} GFLOP/s a rank, {args.latency_us:g} us a "
          "message, no overlap of the gradient sum with the backward\n")
    print("| model | B x T | parameters | all-reduce MB | step s (1 rank) | "
          + " | ".join(f"weak {n} @ {g}G" for n in RANKS for g in LINKS_GBPS) + " |")
    print("|---" * (5 + len(RANKS) * len(LINKS_GBPS)) + "|")
    for L, H, B, T in MODELS:
        P = n_params(L, H, args.vocab)
        step = train_flops(args.vocab, H, L) * B * T / (args.gflops * 1e9)
        cells = [f"{step / (step + comm_seconds(P, n, g, lat)):.0%}" for n in RANKS
                 for g in LINKS_GBPS]
        print(f"| {L}x{H} | {B} x {T} | {P:,} | {4 * P / 1e6:.1f} | {step:.3f} | "
              + " | ".join(cells) + " |")
    print("\nstrong scaling (the same global batch B split n ways; step time / n):\n")
    print("| model | " + " | ".join(f"{n} ranks: B/rank, @10G, @100G" for n in RANKS) + " |")
    print("|---" * (1 + len(RANKS)) + "|")
    for L, H, B, T in MODELS:
        P = n_params(L, H, args.vocab)
        step = train_flops(args.vocab, H, L) * B * T / (args.gflops * 1e9)
        cells = []
        for n in RANKS:
            if n > B:
                cells.append(f"{B}/{n} < 1 stream: impossible")
                continue
            s = step / n
            eff = [s / (s + comm_seconds(P, n, g, lat)) for g in LINKS_GBPS]
            cells.append(f"{B // n}, {eff[0]:.0%}, {eff[1]:.0%}")
        print(f"| {L}x{H} B{B} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
