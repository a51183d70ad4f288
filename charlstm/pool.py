"""The worker threads: how many, the one pool they run in, and the BLAS pool around them.

set_num_threads(n) is a promise, as torch.set_num_threads is: n worker threads, and
NumPy's BLAS limited to n threads for the whole process (threadpoolctl), so that every
path - the workers, a lone worker's GEMMs, a plain model.forward - runs on at most n
cores; None gives the BLAS back its own setting. No numba kernel of charlstm is
parallel (tests/test_engine.py checks), so numba starts no threads of its own.

Work is split two ways, both with results in a fixed order, so that the same thread
count gives the same bits whatever order the workers finish in:
- map_streams: independent slices of B streams, each worker on a one-thread BLAS
  (threadpoolctl's limit is process-wide, which is what we want while every worker
  calls BLAS); the engine decides how thin a slice may be.
- map_chunks: element-wise passes over every weight (optimizer update, clipping,
  weight averaging) in fixed chunks of the flat weights, contiguous runs per worker.
The threads run concurrently because NumPy's BLAS calls and ufuncs and the numba
kernels (nogil) release the GIL. This module knows nothing of the model.

Shape legend: B batch (independent streams).
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import ThreadpoolController

_num_threads: int | None = None  # None: every core this process may use
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_blas: ThreadpoolController | None = None  # built on first parallel use
_blas_limit = None  # threadpoolctl's limiter holding the BLAS at _num_threads; None: untouched


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def set_num_threads(n: int | None) -> None:
    """Run on n cores (like torch.set_num_threads): n worker threads and NumPy's BLAS
    limited to n threads, process-wide. None restores the defaults: as many workers as
    the cores this process may use, and the BLAS's thread count as it was before."""
    global _num_threads, _blas_limit
    if n is not None and (not isinstance(n, int | np.integer) or n < 1):
        raise ValueError(f"the number of threads must be a positive integer, got {n!r}")
    if _blas_limit is not None:
        _blas_limit.restore_original_limits()
        _blas_limit = None
    _num_threads = None if n is None else int(n)
    if n is not None:  # a fresh controller: it sees every BLAS loaded by now
        _blas_limit = ThreadpoolController().limit(limits=int(n), user_api="blas")


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


def stream_slices(B: int, fewest: int, threads: int | None = None) -> list[slice]:
    """Contiguous slices of range(B), one per worker: as many workers as `threads`
    (default get_num_threads()) allows while each slice keeps at least `fewest`
    streams; sizes differ by at most one, the wider first."""
    n = max(1, min(threads or get_num_threads(), B // max(1, fewest)))
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
        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


def _run_all(fn, parts: list) -> list:
    """[fn(p) for p in parts]: the calling thread runs the first, the pool the others;
    results in order. Never returns with a worker still running."""
    futures = [_executor(len(parts) - 1).submit(fn, p) for p in parts[1:]]
    try:
        first = fn(parts[0])
    finally:
        for f in futures:
            f.exception()
    return [first] + [f.result() for f in futures]


def run_workers(fn, parts: list) -> list:
    """[fn(p) for p in parts], one worker each, concurrently, on a one-thread BLAS;
    results in order. A single part runs directly under the process's BLAS settings."""
    if len(parts) == 1:
        return [fn(parts[0])]
    with _one_blas_thread():
        return _run_all(fn, parts)


def map_streams(fn, B: int, fewest: int, threads: int | None = None) -> list:
    """[fn(s) for s in stream_slices(B, fewest, threads)], the slices run concurrently.

    The results come back in slice order whatever order the workers finish in. With
    one slice, fn runs directly under the process's BLAS settings (set_num_threads's
    limit, if any: the serial path is the plain library)."""
    return run_workers(fn, stream_slices(B, fewest, threads))


# Element-wise passes over every weight run in chunks of this many elements, shared
# among the workers: 128K, so that a 2x512 model's passes split into about 30 pieces.
# Below two chunks they stay serial.
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
    return [r for part in _run_all(lambda g: [fn(*c) for c in g], groups) for r in part]
