"""Where one training step's time goes, on one thread: recurrent GEMMs, window GEMMs,
element-wise kernels, the rest.

    python benchmarks/profile_step.py [--config 2x512:64:100] [--repeats 5] [--threads 1]

The step is bench_train.py's (engine.loss_and_grads + clip + Adam, float32, one
thread, no torch). Its parts are measured on their own, on the same shapes, medians
of --repeats:

- recurrent GEMMs: the L*T forward step GEMMs (4H, H) x (H, n) and the L*T backward
  ones (H, 4H) x (4H, n), in one compiled loop through fast.lstm_kernels.matmul_into, as the
  time loops call them (so in OpenBLAS's small kernel where it applies);
- element-wise in the time loops: the compiled forward and backward loops' time
  (from cProfile) less the recurrent GEMMs;
- window GEMMs: every GEMM over all T*B rows that model.py makes (each upper layer's
  input projection and its two gradients, each layer's dW_hh, the decoder's three);
- other compiled kernels (layer-0 gather, one-hot scatter, the layout copies between
  the loop's (T, ., n) layout and the model's (T, B, .), fused Adam and clipping),
  from cProfile;
- the rest: NumPy passes and Python itself; the last on its own is
  estimated as the step time of a 1x8 model with one stream, which makes the same
  calls on arrays too small to cost anything.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time

os.environ.setdefault("CHARLSTM_BENCH_THREADS", "1")  # one thread unless --threads N
import common  # noqa: E402, F401  (sets BLAS threads before numpy loads)
import numba  # noqa: E402
import numpy as np  # noqa: E402
from bench_train import parse_config  # noqa: E402
from common import THREADS, median, table  # noqa: E402
from impls import OursTrainer  # noqa: E402

from charlstm.fast.layout import loop_width  # noqa: E402
from charlstm.fast.lstm_kernels import matmul_into  # noqa: E402

V = 65
LOOPS = {"forward_loop", "backward_loop"}
KERNELS = {"gather_gates", "scatter_add_rows", "transpose_into", "transpose_steps",
           "prescale_steps", "adam_update",
           "sum_squares", "scale_", "gather_rows"}


@numba.njit(nogil=True)
def _recurrent(W, W_T, h, dz, zh, dh, steps):
    """steps forward and steps backward step GEMMs, as the time loops make them."""
    for _ in range(steps):
        matmul_into(W, h, zh)
    for _ in range(steps):
        matmul_into(W_T, dz, dh)


def _timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return median(times)


def _window_gemms(L, H, B, T, rng):
    """The (T*B)-row GEMMs of one step, as a callable."""
    G, N = 4 * H, T * B
    f = np.float32
    X, dZ = rng.random((N, H), f), rng.random((N, G), f)
    W_ih_T, W_ih, dY, W_dec = (rng.random((H, G), f), rng.random((G, H), f),
                               rng.random((N, V), f), rng.random((V, H), f))

    def run():
        for k in range(L):
            if k > 0:
                X @ W_ih_T  # input projection of layer k
                dZ @ W_ih  # its input gradient
                dZ.T @ X  # dW_ih
            dZ.T @ X  # dW_hh
        X @ W_dec.T  # decoder forward, dW, dh
        dY.T @ X
        dY @ W_dec
    return run


def _profiled_step(trainer, x, y, repeats: int) -> tuple[float, dict]:
    """Median step time and cProfile's seconds a step in the loops and the kernels."""
    step = _timed(lambda: trainer.step(x, y), repeats)
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(repeats):
        trainer.step(x, y)
    profile.disable()
    seconds = {"loops": 0.0, "kernels": 0.0}
    for (_, _, name), row in pstats.Stats(profile).stats.items():
        if name in LOOPS:
            seconds["loops"] += row[2] / repeats
        elif name in KERNELS:
            seconds["kernels"] += row[2] / repeats
    return step, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="2x512:64:100", help="LxH:B:T")
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per measurement")
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1; "
                    "with more, the parts overlap and the shares no longer add up)")
    args = ap.parse_args()
    L, H, B, T = parse_config(args.config)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, V, (T, B)), rng.integers(0, V, (T, B))
    step, seconds = _profiled_step(OursTrainer(V, H, L, B), x, y, args.repeats)
    n = loop_width(B, np.zeros((4 * H, H), np.float32))
    W, W_T = rng.random((4 * H, H), np.float32), rng.random((H, 4 * H), np.float32)
    h, dz = rng.random((H, n), np.float32), rng.random((4 * H, n), np.float32)
    zh, dh = np.empty((4 * H, n), np.float32), np.empty((H, n), np.float32)
    recurrent = _timed(lambda: _recurrent(W, W_T, h, dz, zh, dh, L * T), args.repeats)
    window = _timed(_window_gemms(L, H, B, T, rng), args.repeats)
    tiny = OursTrainer(V, 8, L, 1)
    python = _timed(lambda: tiny.step(x[:, :1], y[:, :1]), args.repeats)
    rest = step - seconds["loops"] - window - seconds["kernels"]
    rows = [("recurrent GEMMs (time loops)", recurrent),
            ("element-wise kernels (time loops)", seconds["loops"] - recurrent),
            ("window GEMMs (all T*B rows)", window),
            ("other compiled kernels (gather, scatter, layout copies, Adam, clip)",
             seconds["kernels"]),
            ("NumPy passes", rest - python),
            ("Python (a 1x8 model's step, one stream)", python)]
    print(f"\n{L}x{H} B{B} T{T}, {THREADS} thread(s), {n} loop columns: "
          f"{step * 1e3:.1f} ms a step ({B * T / step:,.0f} chars/s)\n")
    print(table(["part", "ms a step", "share"],
                [[name, f"{t * 1e3:.1f}", f"{t / step:.0%}"] for name, t in rows]))


if __name__ == "__main__":
    main()
