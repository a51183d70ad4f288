"""Stream-parallel execution: one window's B streams split across worker threads.

Shape legend: T time, B batch (independent streams), V vocab, H hidden, L layers.

The B streams of a window never interact inside the model: each has its own
state, its own gates, its own loss terms. Only the weight gradients sum over
them. So the engine cuts the streams into contiguous slices, one per worker, and
each worker runs the whole stack's forward and backward (model.forward /
model.backward, unchanged) on its slice with no synchronisation inside the time
loop. The per-step work is one small GEMM plus fused element-wise kernels, so
a multi-threaded BLAS would pay a barrier per GEMM per step; instead the BLAS
pool is set to one thread for the whole parallel region (threadpoolctl's limit
is process-wide, which is what we want while every worker calls BLAS), and the
threads run concurrently because NumPy's BLAS calls and ufuncs and the numba
kernels (nogil) release the GIL.

Weight gradients are computed per slice (each slice's backward already ends in
one GEMM over its T*B/n rows, large enough to run near peak) and then summed in
slice order. Nothing depends on which thread finishes first, so the same thread
count gives bit-identical results run to run; different thread counts add the
same terms in a different grouping and may differ in the last bits.

How many workers: as many as the threads allow while each slice keeps at least
fewest_streams(H) = max(MIN_SLICE_STREAMS, H / HIDDEN_PER_STREAM) streams (4 up to H =
128, then H/32: 16 at H = 512). A slice's step GEMM multiplies the whole (4H, H)
weight matrix by only `streams` columns, so each worker streams every weight through
its own core once per step; with too few columns for that traffic, one worker whose
multi-threaded BLAS splits the weights between the cores is faster. Below the
threshold one worker runs under the caller's BLAS settings (the plain library).
Measured on 2 cores (AMD EPYC, Zen 5, OpenBLAS's SkylakeX kernel; each setting in
its own process, alternated, medians), time with one worker on a 2-thread BLAS over
time with two workers, loss_and_grads, T = 64 unless given:
1x64 B16 (8 per slice) 1.25, 1x128 B8 (4) 1.25, 1x128 B16 (8) 1.2-1.28, 1x128 B32
1.25, 1x256 B16 (8) 0.96, 1x384 B32 1.10-1.23, 2x256 B32 1.30, 2x512 B64 T100 1.20-1.25,
3x512 B50 T50 1.02-1.06; 1x512 B4 (2) 0.72, 2x512 B8 (4) 0.98, 1x1024 B16 (8) 0.76.
Forward only (window_nll, T = 100): 1x128 B64 1.45-1.6, 1x384 B64 1.20-1.24, 2x512
B64 1.31-1.35, 3x512 B50 T50 1.04-1.06, 2x512 B256 1.31-1.38; 2x512 B16 (8) 0.80.
(These settings were once measured against each other inside one process, A B A B:
that misleads, because after a multi-threaded BLAS call OpenBLAS's helper thread
spins on a core for a while and slows the two-worker run that follows.)
Evaluation and sampling of LSTM stacks run step-major in stack_numba's compiled
loops (each step through the whole stack, then its logits reduced or drawn from at
once, without the GIL); evaluation only up to STEP_MAJOR_MAX_BYTES of weights, where
it beats the layer-by-layer windows. Sampling (charlstm.sample.generate_parallel)
splits from MIN_SAMPLE_SLICE_STREAMS = 32 streams per worker. Measured with
bench_sample.py, 64 streams, two threads, chars/s one worker on a 2-thread BLAS / two
workers of 32: 2x512 43-45k / 60-62k, 1x384 170k / 267k, 1x128 526k / 759k, 2x256
173k / 230k. (Before the step GEMMs ran in OpenBLAS's small kernel, one worker won
at 2x512: 1248-1301 us a step against 1480-1496 for two of 32, so sampling split
from 64 a worker.) Every one-thread step GEMM of 16, 32 or 64 streams runs in that
kernel, cut into pieces of rows (see lstm_numba.piece_rows): training 2x512 B64
T100, two workers, 16.8-17.2k chars/s before, 18.8-19.1k after; 3x512 B50 T50
8.5-8.9k before, 9.6-9.9k after.
A unit split for evaluation (each worker all the streams through its rows of every
weight, the workers meeting at a barrier after each layer of each step, layer inputs
projected a chunk of steps at a time) was built and measured, and not kept: on a
quiet machine it won only where streams split thin (us a step, units / streams, two
workers: 2x256 B32 T64 172-173 / 182-187, 3x512 B50 T50 1572-1608 / 1710-1796; 2x512
B64 T100 1018-1067 / 917-1053), and with a second process spinning a core
(bench_eval.py --load) the barriers cost more than that: 2x512 B50 T50 18.1k against
24.6k chars/s, 1x384 B32 T64 101k against 110k.
The element-wise passes over every weight after the gradients are summed (Adam's
update, the gradient norm and clipping, weight averaging: optim.FUSED) run as numba
kernels over fixed chunks of the flat weights (pool.weight_chunks), contiguous runs of
chunks per worker (pool.map_chunks); reductions add per chunk in chunk order, so they
too give the same bits for any thread count. Measured, 3x512, two threads: clip and
Adam 4.2 + 9.7 ms a step as NumPy passes on one core, 1.2 + 1.8 ms fused and shared.
A layer wavefront for evaluation (worker j runs layer j on time chunk c while
worker j+1 runs chunk c-1, each on one BLAS thread) was measured before the stream
split won for forward-only work too, and not kept: 2x512 B64 T100, 14.1k chars/s at
its best chunking against 16.9k for one worker on a 2-thread BLAS (10.7k on one
thread), on an older 2-core machine.

    pool.set_num_threads(2)                  # or charlstm.set_num_threads / --threads
    loss, grads, state, dstate0, _ = loss_and_grads(params, config, x, y, state, masks)
"""

from __future__ import annotations

import numpy as np

from . import layers, model, pool
from .cells import lstm

try:  # optional: compiled step-major inference for LSTM stacks (numba and its BLAS)
    from . import stack_numba
except ImportError:
    stack_numba = None

# Fewest streams a worker gets: at least MIN_SLICE_STREAMS, and at least H /
# HIDDEN_PER_STREAM, so that its step GEMM has enough columns for the weights it
# streams (see the module docstring); thinner slices lose to one worker.
MIN_SLICE_STREAMS = 4
HIDDEN_PER_STREAM = 32
# Sampling's fewest streams per worker (see the module docstring).
MIN_SAMPLE_SLICE_STREAMS = 32
# Evaluation runs step-major (stack_numba) up to this many bytes of LSTM weights, and
# as model.forward's layer-by-layer windows beyond. Measured, float32, two workers,
# chars/s step-major over windows: 1x128 B64 T100 1.81, 1x384 B64 1.37, 1x384 B32 T64
# 1.29, 1x512 B32 T64 1.29, 1x768 B32 T64 1.31 (9.4 MB of weights), 2x256 B32 T64
# 1.08, 3x256 B64 1.38, 2x512 B64 1.19-1.21 (12.6 MB); 3x512 B64 0.94 and B50 T50 0.86
# (20.9 MB). (2x512 B50 T50, 25 streams a worker, 0.93: OpenBLAS runs 25 columns at
# 127 GFLOP/s against 199 for 32, and the per-step GEMMs feel it most; since the
# compiled loop pads its columns as the cells do (lstm.loop_width), 25 streams run as
# 32: 37.5k against 31.3-32.0k chars/s, two workers.) Since the step GEMMs run in
# OpenBLAS's small kernel (lstm_numba.piece_rows), us a step, B64 T100, step-major /
# windows, 2 runs each: 3x512 1636-1764 / 1929-2006 (20.9 MB), 1x1024 1466-1568 /
# 1795-1851 (17.8 MB); 2x768 2861-2977 / 2642-2662 (29.1 MB), 4x512 2960-3161 /
# 2786-2820 (29.9 MB), 2x1024 4944-4998 / 4780-4912 (51 MB).
STEP_MAJOR_MAX_BYTES = 24 * 2**20

def fewest_streams(H: int) -> int:
    """The fewest streams worth a worker of their own at hidden size H."""
    return max(MIN_SLICE_STREAMS, -(-H // HIDDEN_PER_STREAM))


def stream_slices(B: int, H: int, threads: int | None = None,
                  fewest: int | None = None) -> list[slice]:
    """pool.stream_slices with at least `fewest` streams a slice (default
    fewest_streams(H))."""
    return pool.stream_slices(B, fewest_streams(H) if fewest is None else fewest, threads)


def map_streams(fn, B: int, H: int, threads: int | None = None,
                fewest: int | None = None) -> list:
    """pool.map_streams over stream_slices(B, H, threads, fewest): [fn(s) for each
    slice s], run concurrently, in slice order."""
    return pool.map_streams(fn, B, fewest_streams(H) if fewest is None else fewest, threads)


def _slice_state(state, s: slice):
    """Streams s of a state tuple of (L, B, H) arrays (None stays None)."""
    return None if state is None else tuple(part[:, s] for part in state)


def _join_states(states) -> tuple:
    """Concatenate per-slice state tuples along the stream axis, in slice order."""
    if len(states) == 1:
        return states[0]
    return tuple(np.concatenate(parts, axis=1) for parts in zip(*states))


def loss_and_grads(params: dict, config, x: np.ndarray, y: np.ndarray, state=None,
                   masks=None, dstate=None, threads: int | None = None,
                   penalty=None, weight_masks=None) -> model.WindowGrads:
    """model.loss_and_grads with the streams split across workers.

    Args:
        params: name -> ndarray (model.param_shapes).
        x, y: (T, B) int ids; y[t] is the character after x[t].
        state: tuple of (L, B, H) arrays, or None for zeros.
        masks: output dropout masks drawn for the whole batch (model.make_dropout_masks:
            L-1 or L of (T, B, H) or (1, B, H)), or None.
        dstate: dL/d(final state), tuple of (L, B, H), or None for zeros.
        threads: workers (default pool.get_num_threads()).
        penalty: AR and TAR weights (penalties.Penalty), or None.
        weight_masks: name -> mask on that weight (model.make_weight_masks), or None.
    Returns:
        WindowGrads(loss, grads, final state, dstate0, penalty), as model.loss_and_grads.
    With one slice this is exactly model.loss_and_grads.
    """
    T, B = x.shape
    if len(stream_slices(B, config.hidden_size, threads)) == 1:
        return model.loss_and_grads(params, config, x, y, state, masks, dstate,
                                    penalty=penalty, weight_masks=weight_masks)
    # the weights are masked once, before the split: every slice runs on the same ones
    used = model.drop_weights(params, weight_masks)

    def work(s: slice) -> model.WindowGrads:
        # every slice divides by the whole window's T*B, so the slices' losses, penalties
        # and gradients sum to the whole batch's means
        return model.loss_and_grads(
            used, config, x[:, s], y[:, s], _slice_state(state, s),
            None if masks is None else [m[:, s] for m in masks], _slice_state(dstate, s),
            count=T * B, penalty=penalty)

    results = map_streams(work, B, config.hidden_size, threads)
    loss, grads, value = results[0].loss, results[0].grads, results[0].penalty
    for part in results[1:]:  # a fixed order: sums that do not depend on scheduling
        loss += part.loss
        value += part.penalty
        for name, g in part.grads.items():
            grads[name] += g
    model.drop_weights_backward(grads, weight_masks)  # once, on the sum
    return model.WindowGrads(loss, grads, _join_states([r.state for r in results]),
                             _join_states([r.dstate0 for r in results]), value)


def forward(params: dict, config, x: np.ndarray, state=None, threads: int | None = None):
    """Evaluation-mode forward (no dropout, no cache), streams in parallel.

    Args:
        x: (T, B) int ids.  state: tuple of (L, B, H) arrays, or None for zeros.
    Returns:
        logits (T, B, V), final state (tuple of (L, B, H)).
    """
    def work(s: slice):
        logits, final, _ = model.forward(params, config, x[:, s], _slice_state(state, s),
                                         need_cache=False)
        return logits, final

    results = map_streams(work, x.shape[1], config.hidden_size, threads)
    if len(results) == 1:
        return results[0]
    return (np.concatenate([r[0] for r in results], axis=1),
            _join_states([r[1] for r in results]))


def compiled_inference(params: dict, config, windows: bool = False):
    """The weights as stack_numba's compiled loops read them, when they apply (an LSTM
    stack, numba's fused loops in use: see cells.lstm.BACKEND and FUSED_LOOPS); else
    None. Prepared once per evaluation or sampling call: a copy of every weight.

    windows: for evaluation, where model.forward's layer-by-layer windows are the
    alternative: the step-major loop reads every weight of the stack once per step,
    while model.forward runs each layer's input projection as one GEMM per window, so
    past STEP_MAJOR_MAX_BYTES of weights the windows win (see STEP_MAJOR_MAX_BYTES)."""
    if (stack_numba is None or config.cell != "lstm"
            or not lstm.fused_loops(params["decoder.weight"].dtype)):
        return None
    weight_bytes = sum(params[f"lstm.weight_{kind}_l{k}"].nbytes
                       for k in range(config.num_layers) for kind in ("ih", "hh"))
    if windows and weight_bytes > STEP_MAJOR_MAX_BYTES:
        return None
    return stack_numba.prepare(params, config.num_layers)


def window_nll(params: dict, config, x: np.ndarray, y: np.ndarray, mask: np.ndarray,
               state=None, threads: int | None = None, compiled=None):
    """Summed cross-entropy of the positions `mask` selects, and the final state.

    Args:
        x, y: (T, B) int ids.  mask: (T, B) bool, the positions that count.
        state: tuple of (L, B, H) arrays, or None for zeros.
        compiled: compiled_inference(params, config), when the caller evaluates many
            windows with the same weights; None runs model.forward per slice.
    Returns:
        total nll (float, nats, summed in float64), count (int), final state.
    Each slice reduces its own logits, so no (T, B, V) array is ever joined; the
    compiled loop makes no (T, B, .) array at all: each step's logits are reduced
    as soon as they exist (measured, 2x512 B64 T100, two workers: 55-57k chars/s
    against 46-47k for model.forward's layer-by-layer windows).
    """
    def work(s: slice):
        if compiled is not None:
            return stack_numba.window_nll(compiled, x[:, s], y[:, s], mask[:, s],
                                          _slice_state(state, s))
        logits, final, _ = model.forward(params, config, x[:, s], _slice_state(state, s),
                                         need_cache=False)
        logp = layers.log_softmax(logits)  # (T, b, V)
        nll = -np.take_along_axis(logp, y[:, s, None], axis=-1)[..., 0]
        m = mask[:, s]
        return float(nll[m].sum(dtype=np.float64)), int(m.sum()), final

    results = map_streams(work, x.shape[1], config.hidden_size, threads)
    total = 0.0
    for part, _, _ in results:
        total += part
    return total, sum(r[1] for r in results), _join_states([r[2] for r in results])
