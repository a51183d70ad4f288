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
Evaluation and sampling ask the cell for compiled step-major inference (the fast
LSTM's stack_inference: each step through the whole stack, its logits reduced or
drawn from at once, without the GIL); evaluation only up to STEP_MAJOR_MAX_BYTES of
weights, where it beats the layer-by-layer windows. Sampling splits from
MIN_SAMPLE_SLICE_STREAMS streams per worker. The element-wise passes over every
weight (optimiser update, clipping, averaging) run over fixed chunks of the flat
weights (weight_chunks) shared among the workers (map_chunks); reductions add per
chunk in chunk order, so they give the same bits for any thread count. The
measurements behind these thresholds, and designs measured and not kept, are in
docs/performance.md.

    set_num_threads(2)                       # or charlstm.set_num_threads / --threads
    loss, grads, state, dstate0, _ = loss_and_grads(params, config, x, y, state, masks)
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import NamedTuple

import numpy as np

from . import fast, layers, model

# Fewest streams a worker gets: at least MIN_SLICE_STREAMS, and at least H /
# HIDDEN_PER_STREAM, so that its step GEMM has enough columns for the weights it
# streams (see the module docstring); thinner slices lose to one worker.
MIN_SLICE_STREAMS = 4
HIDDEN_PER_STREAM = 32
# Sampling's fewest streams per worker (see the module docstring).
MIN_SAMPLE_SLICE_STREAMS = 32
# Evaluation runs step-major (the cell's stack_inference) up to this many bytes of
# recurrent weights, and as model.forward's layer-by-layer windows beyond (measured:
# docs/performance.md).
STEP_MAJOR_MAX_BYTES = 24 * 2**20

_num_threads: int | None = None  # None: every core this process may use
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_blas = None  # threadpoolctl.ThreadpoolController, built on first parallel use


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def set_num_threads(n: int | None) -> None:
    """Use n worker threads (like torch.set_num_threads); None restores the default,
    the number of cores this process may use."""
    global _num_threads
    if n is not None and (not isinstance(n, int | np.integer) or n < 1):
        raise ValueError(f"the number of threads must be a positive integer, got {n!r}")
    _num_threads = None if n is None else int(n)


def get_num_threads() -> int:
    return _num_threads if _num_threads is not None else available_cores()


@contextlib.contextmanager
def num_threads(n: int | None):
    """Context: set_num_threads(n) while it is open, then the previous setting."""
    before = _num_threads
    set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(before)


def fewest_streams(H: int) -> int:
    """The fewest streams worth a worker of their own at hidden size H."""
    return max(MIN_SLICE_STREAMS, -(-H // HIDDEN_PER_STREAM))


def stream_slices(B: int, H: int, threads: int | None = None,
                  fewest: int | None = None) -> list[slice]:
    """Contiguous slices of range(B), one per worker: as many workers as `threads`
    (default get_num_threads()) allows while each slice keeps at least `fewest`
    streams (default fewest_streams(H)); sizes differ by at most one, the wider first."""
    fewest = max(1, fewest_streams(H) if fewest is None else fewest)
    n = max(1, min(threads or get_num_threads(), B // fewest))
    base, extra = divmod(B, n)
    bounds = np.cumsum([0] + [base + (k < extra) for k in range(n)])
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _executor(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool with at least `workers` threads (kept between calls)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < workers:
            if _pool is not None:
                _pool.shutdown(wait=True)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="charlstm")
        return _pool


def _one_blas_thread():
    """Context: the BLAS pool limited to one thread (process-wide) while it is open."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController
        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


def map_streams(fn, B: int, H: int, threads: int | None = None,
                fewest: int | None = None) -> list:
    """[fn(s) for s in stream_slices(B, H, threads, fewest)], the slices run concurrently.

    The calling thread runs the first slice itself; the results come back in slice
    order whatever order the workers finish in. With one slice, fn runs directly
    under the caller's BLAS settings (the serial path is the plain library)."""
    parts = stream_slices(B, H, threads, fewest)
    if len(parts) == 1:
        return [fn(parts[0])]
    with _one_blas_thread():
        futures = [_executor(len(parts) - 1).submit(fn, s) for s in parts[1:]]
        try:
            first = fn(parts[0])
        finally:  # never leave the region (and restore BLAS threads) with workers running
            for f in futures:
                f.exception()
        return [first] + [f.result() for f in futures]


# Element-wise passes over every weight (optimizer update, clipping, weight averaging)
# run in chunks of this many elements, shared among the workers: 128K, so that a
# 2x512 model's passes split into about 30 pieces. Below two chunks they stay serial.
CHUNK_ELEMENTS = 1 << 17


def weight_chunks(sizes) -> list[tuple[int, int, int]]:
    """(array index, start, stop) for flat ranges of at most CHUNK_ELEMENTS of each
    array in `sizes` (their element counts), in order: the same pieces whatever
    the thread count, so reductions over them add in the same order too."""
    return [(k, a, min(a + CHUNK_ELEMENTS, n))
            for k, n in enumerate(sizes) for a in range(0, n, CHUNK_ELEMENTS)]


def map_chunks(fn, sizes, threads: int | None = None) -> list:
    """[fn(k, start, stop) for weight_chunks(sizes)], contiguous runs of chunks on
    each worker at once; the results in chunk order. fn must release the GIL for
    the work itself (numba nogil kernels) and write only its own range."""
    chunks = weight_chunks(sizes)
    n = max(1, min(threads or get_num_threads(), len(chunks)))
    if n == 1:
        return [fn(*c) for c in chunks]
    bounds = np.linspace(0, len(chunks), n + 1).round().astype(int)
    groups = [chunks[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def run(group):
        return [fn(*c) for c in group]

    futures = [_executor(n - 1).submit(run, g) for g in groups[1:]]
    try:
        first = run(groups[0])
    finally:
        for f in futures:
            f.exception()
    return first + [r for f in futures for r in f.result()]


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
        threads: workers (default get_num_threads()).
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

    results = map_streams(work, x.shape[1], config.hidden_size, threads)
    total = 0.0
    for part, _, _ in results:
        total += part
    return total, sum(r[1] for r in results), _join_states([r[2] for r in results])
