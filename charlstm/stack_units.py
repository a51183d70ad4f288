"""Evaluation of an LSTM stack with its hidden units split across workers (compiled,
step-major; ImportError without numba, its BLAS or a way to yield the CPU).

Shape legend: T steps, B streams, n >= B loop columns, V vocab, L layers, H hidden,
W workers, Hw = a worker's units, Gw = 4 Hw its gate rows.

Why: stack_numba.window_nll splits the streams: each worker runs its slice of streams
through every weight. Each step's GEMM then has few columns (32 of a 64-stream batch
on two workers) for the (4H, H) weights it streams, and every worker streams all of
them. Splitting the units instead, each worker multiplies only its rows of every
weight (1/W of the bytes) by all n columns. Measured, one thread per
worker, 3 GEMMs a step rotating through their weights, H = 512: streams split (G = 2048
rows, 32 columns each) 276 GFLOP/s for two workers together; units split (1024 rows,
64 columns each) 400.

How: worker w owns units [u0, u1) of every layer: the rows of the four gate blocks
(i, f, g, o) for those units of W_ih, W_hh and the biases, so its gate buffer (Gw, n)
is laid out as a whole Hw-unit layer's and lstm_numba.forward_step runs on it as it is.
Each step, layer by layer, a worker computes its units' gates for all streams, their c
and h, writes its rows of the layer's h and waits at a barrier until every worker has
written theirs: the layer above and the next step read all of h. h and c are kept
twice, by step parity, so that writing step t never overwrites step t-1 while another
worker may still read it: one barrier per layer per step suffices. After the top
layer's barrier each worker reduces the logits of its own slice of streams.

Each unit's numbers are computed by the same operations, in the same order, whatever
the split; only the GEMM's blocking differs, which can move the last bit (as the
stream split can). The barrier spins on atomic loads and yields the CPU after a while,
so a worker whose partner lost its core does not burn the next time slice.
"""

from __future__ import annotations

import ctypes
import math
from typing import NamedTuple

import llvmlite.binding as llvm
import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .cells import lstm_numba
from .cells.lstm import loop_width
from .cells.lstm_numba import _JIT, forward_step

if not hasattr(lstm_numba, "matmul_into"):  # NumPy's BLAS could not be bound
    raise ImportError("no CBLAS GEMM in NumPy's BLAS")
matmul_into, matmul_cols_into = lstm_numba.matmul_into, lstm_numba.matmul_cols_into


def _external_yield():
    """sched_yield() from the C library, as a numba external function, or None."""
    try:
        address = ctypes.cast(ctypes.CDLL(None).sched_yield, ctypes.c_void_p).value
    except (AttributeError, OSError, TypeError):
        return None
    llvm.add_symbol("charlstm_sched_yield", address)
    return types.ExternalFunction("charlstm_sched_yield", types.int32())


_sched_yield = _external_yield()
if _sched_yield is None:  # a spinning barrier without it could starve a worker's partner
    raise ImportError("no sched_yield in the C library")

# Spins (atomic loads) before a waiting worker yields its CPU: ~10 us.
SPINS = 4096
# Columns of a chunk's input projection (K steps of n streams; see _worker): measured,
# (1024, 512) weights, one thread, 202 GFLOP/s at 64 columns, 218 at 128, 229 at 256.
CHUNK_COLUMNS = 512
# Each worker's barrier counter sits on its own 128-byte line (no false sharing).
_LINE = 16


@intrinsic
def _store_release(typingctx, flags, index, value):
    """flags[index] = value, an atomic store with release ordering (int64 array)."""
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        array = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, array, [args[1]])
        builder.store_atomic(args[2], pointer, "release", 8)
        return context.get_dummy_value()
    return types.void(flags, index, value), codegen


@intrinsic
def _load_acquire(typingctx, flags, index):
    """flags[index], an atomic load with acquire ordering (int64 array)."""
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        array = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, array, [args[1]])
        return builder.load_atomic(pointer, "acquire", 8)
    return types.int64(flags, index), codegen


@numba.njit(**_JIT)
def _barrier(flags, w, epoch):
    """Worker w has reached barrier number epoch (1, 2, ...); wait for every worker.
    flags ((W + 1) * _LINE,) int64, zero at the start: worker j's count at j * _LINE,
    the last line nonzero once a worker has failed (then False is returned at once).
    Release/acquire: what a worker wrote before it arrived is visible to every worker
    after they all have."""
    _store_release(flags, w * _LINE, epoch)
    failed = flags.size - _LINE
    for j in range(failed // _LINE):
        spins = 0
        while _load_acquire(flags, j * _LINE) < epoch:
            spins += 1
            if spins == SPINS:
                if _load_acquire(flags, failed):
                    return False
                _sched_yield()
                spins = 0
    return True


def unit_ranges(H: int, workers: int) -> list[tuple[int, int]]:
    """[u0, u1) for each worker: contiguous, sizes differ by at most one, wider first."""
    base, extra = divmod(H, workers)
    bounds = np.cumsum([0] + [base + (k < extra) for k in range(workers)])
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _gate_rows(H: int, u0: int, u1: int) -> np.ndarray:
    """Rows of a (4H, .) gate-ordered matrix for units [u0, u1): [i ; f ; g ; o]."""
    return np.concatenate([np.arange(g * H + u0, g * H + u1) for g in range(4)])


def prepare(weights: tuple, workers: int) -> list[tuple]:
    """Each worker's rows of stack_numba.prepare's weights (C-contiguous copies):
    (table0 (Gw, V), W_ih (max(L-1, 1), Gw, H), b_ih, b_hh (L, Gw), W_hh (L, Gw, H))."""
    table0, W_ih, b_ih, b_hh, W_hh = weights[:5]
    H = W_hh.shape[2]
    parts = []
    for u0, u1 in unit_ranges(H, min(workers, H)):
        rows = _gate_rows(H, u0, u1)
        parts.append(tuple(np.ascontiguousarray(a) for a in
                           (table0[rows], W_ih[:, rows], b_ih[:, rows], b_hh[:, rows],
                            W_hh[:, rows])))
    return parts


@numba.njit(**_JIT)
def _nll(logits, b_dec, y, mask, s0):
    """Summed cross-entropy (float64) of streams s0.. of one step: logits (V, s) for
    those streams (b_dec added here), y (n,) targets, mask (n,) which count."""
    V, total = logits.shape[0], 0.0
    for j in range(logits.shape[1]):
        b = s0 + j
        if not mask[b]:
            continue
        z_max = -np.inf
        for v in range(V):
            logits[v, j] += b_dec[v]
            z_max = max(z_max, np.float64(logits[v, j]))
        s = 0.0
        for v in range(V):
            s += math.exp(np.float64(logits[v, j]) - z_max)
        # forward: nll = -log softmax(z)[y] = log sum exp(z - max) - (z[y] - max)
        total += math.log(s) - (np.float64(logits[y[b], j]) - z_max)
    return total


@numba.njit(**_JIT)
def _worker(w, u0, u1, s0, s1, x, y, mask, own, W_dec, b_dec, hbuf, cbuf, hc, flags,
            z, zh, zc, tanh_c, logits):
    """Worker w's part of a window (see the module docstring): units [u0, u1), streams
    [s0, s1) for the logits. x, y (T, n) ids, mask (T, n); own: prepare()[w]; W_dec
    (V, H), b_dec (V,); hbuf, cbuf (2, L, H, n), the state in [1] at the start and in
    [(T-1) % 2] at the end; hc (max(L-1, 1), H, K n) the outputs of layers below the
    top for a chunk of K steps; flags ((W + 1) * _LINE,) int64 zeros; z, zh (Gw, n),
    zc (Gw K n,), tanh_c (Hw, n), logits (V, s1 - s0) scratch. Returns the summed nll
    of streams [s0, s1).

    The window runs in chunks of K steps, layer by layer within a chunk: each layer's
    input projection for the chunk is then one GEMM of K n columns, which runs near the
    core's peak, while the recurrent GEMM of every step has only n."""
    table0, W_ih, b_ih, b_hh, W_hh = own
    L, G, n = hbuf.shape[1], z.shape[0], z.shape[1]
    T, K = x.shape[0], hc.shape[2] // n
    epoch, total = 0, 0.0
    for t0 in range(0, T, K):
        steps = min(K, T - t0)
        for k in range(L):
            if k > 0:  # forward: xw = W_ih h_below^T, the chunk's steps at once
                xw = zc[:G * steps * n].reshape(G, steps * n)
                matmul_cols_into(W_ih[k - 1], hc[k - 1], 0, steps * n, xw)
            for j in range(steps):
                t = t0 + j
                cur, prev = t % 2, (t + 1) % 2
                if k == 0:  # forward: xw = W_ih[:, x] + b_ih (a column gather), z = xw + b_hh
                    ids = x[t]
                    for g in range(G):
                        row, bias = table0[g], b_hh[0, g]
                        for b in range(n):
                            z[g, b] = row[ids[b]] + bias
                else:  # forward: z = (xw + b_ih) + b_hh
                    for g in range(G):
                        bi, bh, xg = b_ih[k, g], b_hh[k, g], xw[g, j * n:(j + 1) * n]
                        for b in range(n):
                            z[g, b] = (xg[b] + bi) + bh
                matmul_into(W_hh[k], hbuf[prev, k], zh)  # forward: zh = W_hh h_prev^T
                h = hbuf[cur, k, u0:u1]
                forward_step(z, zh, cbuf[prev, k, u0:u1], cbuf[cur, k, u0:u1], tanh_c, h)
                if k < L - 1:  # the input of layer k + 1's projection
                    hc[k, u0:u1, j * n:(j + 1) * n] = h
                epoch += 1
                if not _barrier(flags, w, epoch):  # all of layer k's h at step t written
                    return total  # (another worker failed: the window is lost anyway)
                if k == L - 1 and s1 > s0:  # forward: logits = h W_dec^T + b_dec, [s0, s1)
                    matmul_cols_into(W_dec, hbuf[cur, k], s0, s1, logits)
                    total += _nll(logits, b_dec, y[t], mask[t], s0)
    return total


class Split(NamedTuple):
    """What window_nll reads: the whole stack's weights and each worker's rows."""
    weights: tuple  # stack_numba.prepare(params, L)
    parts: list  # prepare(weights, W): one tuple per worker


def window_nll(split: Split, x: np.ndarray, y: np.ndarray, mask: np.ndarray, state,
               submit):
    """stack_numba.window_nll with the units split across len(split.parts) workers.

    x, y (T, B) ids; mask (T, B) bool; state: (h, c) each (L, B, H), or None for
    zeros; submit: runs a callable on another thread and returns a future (engine's
    pool, with a free thread for each worker but the first, which runs here). The
    caller limits the BLAS to one thread. Returns total nll (float), count (int),
    final state ((L, B, H) each)."""
    weights, parts = split
    W_hh, W_dec, b_dec = weights[4], weights[5], weights[6]
    L, G, H = W_hh.shape
    V, dtype, (T, B) = W_dec.shape[0], W_dec.dtype, x.shape
    workers = len(parts)  # (prepare gives no worker fewer than one unit)
    n = loop_width(B, W_hh[0])  # padded as stack_numba's streams: id 0, never counted
    hbuf, cbuf = (np.zeros((2, L, H, n), dtype) for _ in range(2))
    if state is not None:
        for buf, part in zip((hbuf, cbuf), state):
            buf[1, :, :, :B] = part.transpose(0, 2, 1)
    ids, targets, counts = (np.zeros((T, n), np.int64), np.zeros((T, n), np.int64),
                            np.zeros((T, n), np.bool_))
    ids[:, :B], targets[:, :B], counts[:, :B] = x, y, mask
    flags = np.zeros((workers + 1) * _LINE, np.int64)
    K = max(1, CHUNK_COLUMNS // n)  # steps per chunk
    hc = np.empty((max(L - 1, 1), H, K * n), dtype)
    units = unit_ranges(H, workers)
    streams = unit_ranges(B, workers)  # the logits: each worker its slice of streams

    def run(w: int) -> float:
        (u0, u1), (s0, s1) = units[w], streams[w]
        Gw = 4 * (u1 - u0)
        try:
            return _worker(w, u0, u1, s0, s1, ids, targets, counts, parts[w], W_dec,
                           b_dec, hbuf, cbuf, hc, flags, np.empty((Gw, n), dtype),
                           np.empty((Gw, n), dtype), np.empty(Gw * K * n, dtype),
                           np.empty((u1 - u0, n), dtype), np.empty((V, s1 - s0), dtype))
        except BaseException:
            flags[-_LINE] = 1  # release the others from their barriers
            raise

    futures = [submit(run, w) for w in range(1, workers)]
    try:
        total = run(0)
    finally:
        for f in futures:
            f.exception()
    for f in futures:  # a fixed order: the same sum whatever finishes first
        total += f.result()
    last = (T - 1) % 2
    return total, int(mask.sum()), tuple(buf[last, :, :, :B].transpose(0, 2, 1).copy()
                                         for buf in (hbuf, cbuf))
