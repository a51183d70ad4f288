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
fewest_streams(H) = max(MIN_SLICE_STREAMS, min(ENOUGH_SLICE_STREAMS, H /
HIDDEN_PER_STREAM)) streams (4 up to H = 128, then H/32, and 16 from H = 512 on). A
slice's step GEMM multiplies the whole (4H, H) weight matrix by only `streams` columns,
so each worker streams every weight through its own core once per step; with too few
columns for that traffic, one worker whose multi-threaded BLAS splits the weights
between the cores is faster. 16 columns are enough at any H, now that the compiled
loops cut a one-thread step GEMM into OpenBLAS small-kernel pieces (1x768 and 1x1024
at B = 32 on two threads: two slices of 16 ran 2.2-3.3x and 1.7-2.3x one worker on a
two-thread BLAS, medians of 3 alternating processes on a loaded machine; 2.4x at 1x768
with the Haswell kernel too: docs/performance.md). Below the threshold one worker runs
under the process's BLAS settings (the plain library, at most set_num_threads threads).
Evaluation and sampling ask the cell for compiled step-major inference (the fast
LSTM's stack_inference: each step through the whole stack, its logits reduced or
drawn from at once, without the GIL); evaluation only up to STEP_MAJOR_MAX_BYTES of
weights, where it beats the layer-by-layer windows. Their GEMMs run any number of
streams at full speed, so both split from COMPILED_SLICE_STREAMS streams per worker
(16 streams on two workers of 8: 2.0x one worker, 2x512), and evaluation runs each
worker's slice through every window on its own (charlstm.evaluate). The
element-wise passes over every weight (optimiser update, clipping, averaging) run over
fixed chunks of the flat weights (weight_chunks) shared among the workers
(map_chunks); reductions add per chunk in chunk order, so they give the same bits for
any thread count. The
measurements behind these thresholds, and designs measured and not kept, are in
docs/performance.md.

    pool.set_num_threads(2)                  # or charlstm.set_num_threads / --threads
    loss, grads, state, dstate0, _ = loss_and_grads(params, config, x, y, state, masks)
"""

from __future__ import annotations

from types import ModuleType
from typing import NamedTuple

import numpy as np

from . import fast, layers, model, pool

# Fewest streams a worker gets: at least MIN_SLICE_STREAMS, and at least H /
# HIDDEN_PER_STREAM, so that its step GEMM has enough columns for the weights it
# streams (see the module docstring); thinner slices lose to one worker. But never
# more than ENOUGH_SLICE_STREAMS: that many are worth a worker at any H.
MIN_SLICE_STREAMS = 4
HIDDEN_PER_STREAM = 32
ENOUGH_SLICE_STREAMS = 16
# The fewest streams per worker in the compiled step-major loops (evaluation, sampling):
# their GEMMs run any number of streams at full speed (fast.stack), so 4 are worth a
# worker (docs/performance.md, 2026-12-05).
COMPILED_SLICE_STREAMS = 4
# Evaluation runs step-major (the cell's stack_inference) up to this many bytes of
# recurrent weights, and as model.forward's layer-by-layer windows beyond (measured:
# docs/performance.md).
STEP_MAJOR_MAX_BYTES = 24 * 2**20


def fewest_streams(H: int) -> int:
    """The fewest streams worth a worker of their own at hidden size H."""
    return max(MIN_SLICE_STREAMS, min(ENOUGH_SLICE_STREAMS, -(-H // HIDDEN_PER_STREAM)))


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
                   penalty=None, weight_masks=None, count: int | None = None
                   ) -> model.WindowGrads:
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
        count: the number of targets the means are over (default T*B); a rank that
            owns a slice of a larger batch passes the whole batch's (distributed.py).
    Returns:
        WindowGrads(loss, grads, final state, dstate0, penalty), as model.loss_and_grads.
    With one slice this is exactly model.loss_and_grads.
    """
    T, B = x.shape
    count = T * B if count is None else count
    if len(stream_slices(B, config.hidden_size, threads)) == 1:
        return model.loss_and_grads(params, config, x, y, state, masks, dstate, count=count,
                                    penalty=penalty, weight_masks=weight_masks)
    # the weights are masked once, before the split: every slice runs on the same ones
    used = model.drop_weights(params, weight_masks)

    def work(s: slice) -> model.WindowGrads:
        # every slice divides by the whole window's T*B, so the slices' losses, penalties
        # and gradients sum to the whole batch's means
        return model.loss_and_grads(
            used, config, x[:, s], y[:, s], _slice_state(state, s),
            None if masks is None else [m[:, s] for m in masks], _slice_state(dstate, s),
            count=count, penalty=penalty)

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


class CompiledInference(NamedTuple):
    run: ModuleType  # the cell's stack_inference: prepare, weight_bytes, window_nll, generate
    weights: tuple  # run.prepare(params, L): the weights as its compiled loops read them


def compiled_inference(params: dict, config, windows: bool = False):
    """The cell's compiled step-major inference and the weights it reads, where the
    cell offers one (its stack_inference) for this dtype under the fast settings;
    else None. Prepared once per evaluation or sampling call: a copy of every weight.

    windows: for evaluation, where model.forward's layer-by-layer windows are the
    alternative: the step-major loop reads every weight of the stack once per step,
    while model.forward runs each layer's input projection as one GEMM per window, so
    past STEP_MAJOR_MAX_BYTES of weights the windows win."""
    offer = getattr(fast.implementation(config.cell), "stack_inference", None)
    run = None if offer is None else offer(params["decoder.weight"].dtype)
    if run is None:
        return None
    if windows and run.weight_bytes(params, config.num_layers) > STEP_MAJOR_MAX_BYTES:
        return None
    return CompiledInference(run, run.prepare(params, config.num_layers))


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
    as soon as they exist.
    """
    def work(s: slice):
        if compiled is not None:
            return compiled.run.window_nll(compiled.weights, x[:, s], y[:, s], mask[:, s],
                                           _slice_state(state, s))
        logits, final, _ = model.forward(params, config, x[:, s], _slice_state(state, s),
                                         need_cache=False)
        logp = layers.log_softmax(logits)  # (T, b, V)
        nll = -np.take_along_axis(logp, y[:, s, None], axis=-1)[..., 0]
        m = mask[:, s]
        return float(nll[m].sum(dtype=np.float64)), int(m.sum()), final

    fewest = None if compiled is None else COMPILED_SLICE_STREAMS
    results = map_streams(work, x.shape[1], config.hidden_size, threads, fewest)
    total = 0.0
    for part, _, _ in results:
        total += part
    return total, sum(r[1] for r in results), _join_states([r[2] for r in results])
