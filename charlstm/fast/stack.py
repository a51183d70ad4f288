"""Compiled step-major inference for LSTM stacks: sampling and evaluation
(ImportError without numba or its BLAS); the fast LSTM's stack_inference.

Shape legend: B streams, V vocab, L layers, H hidden, G = 4H gate rows, N steps.

Why: charlstm.sample.generate_ids runs each step as a dozen NumPy calls per layer
plus the draw (probabilities, a cumulative sum, one uniform per stream from its
own Generator), all under the GIL. For one stream that overhead is most of a step;
for many streams split across workers, the workers queue for the GIL every step.
Here the whole loop, steps and draws, is one numba call per chunk of steps that
never takes the GIL, so workers run side by side.

It computes what model.step + sample.sample_ids compute, in the same order of
operations, with two differences that only move the last bit of a number (and so
a draw only when its uniform falls that close to a boundary of the distribution):
the GEMMs run block by block (below), and the sums are sequential where NumPy's are
pairwise. The uniforms are those the Generators would give one call at a time:
rng.random(n) draws the same doubles as n calls of rng.random(), so they are drawn
ahead, per chunk, in Python.

Everything inside is batch-major, as the model's own arrays: the state h, c is
(L, B, H), the gates (B, G), the logits (B, V), all C-contiguous, one row per stream.
Each GEMM h W^T runs block by block over W^T's columns, packed once per call of
prepare() into contiguous (K, 32) blocks (lstm_kernels.pack_columns), each call under
OpenBLAS's small-kernel bound: that kernel vectorises along the 32 columns and takes
the streams four at a time, so any number of streams runs at full speed, unpadded
(the feature-major W h^T of the training loops vectorises along the streams and pays
for a remainder past 16 of them; docs/performance.md has the measurements).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from . import lstm_kernels
from .layout import gate_constants
from .lstm_kernels import _JIT, forward_step

if not hasattr(lstm_kernels, "matmul_into"):  # NumPy's BLAS could not be bound
    raise ImportError("no CBLAS GEMM in NumPy's BLAS: sampling uses the generic loop")
matmul_t, pack_columns = lstm_kernels.matmul_t, lstm_kernels.pack_columns
# The SHA-256 of lstm_kernels.py, whose kernels compile into this file's: editing it
# must edit this file, or numba would keep this file's cached loops (see lstm_kernels).
KERNELS_SOURCE_SHA256 = "e3828ef12f5a06f93f5e5c6d65059a036ba5bbe848d4d31a1d7a08e3ca27c475"

# Steps per compiled call: the uniforms for one chunk are drawn ahead in Python.
CHUNK_STEPS = 256


@numba.njit(**_JIT)
def _stack_step(ids, weights, h, c, c_next, z, zh, tanh_c, logits):
    """One character per stream through the stack (model.step, batch-major).

    ids (B,); weights from prepare(); h (L, B, H) updated in place; c -> c_next
    (L, B, H); z, zh (B, G), tanh_c (H,) scratch; logits (B, V) out.
    """
    table0, W_ih, P_ih, b_ih, b_hh, W_hh, P_hh, W_dec, P_dec, b_dec = weights
    L, B = h.shape[0], h.shape[1]
    for k in range(L):
        if k == 0:  # forward: xw = W_ih[:, x] + b_ih (a row of table0), z = xw + b_hh
            bh = b_hh[0]
            for b in range(B):
                row, zb = table0[ids[b]], z[b]
                for g in range(zb.shape[0]):
                    zb[g] = row[g] + bh[g]
        else:  # forward: xw = h_below W_ih^T + b_ih, z = xw + b_hh
            matmul_t(h[k - 1], W_ih[k - 1], P_ih[k - 1], z)
            bi, bh = b_ih[k], b_hh[k]
            for b in range(B):
                zb = z[b]
                for g in range(zb.shape[0]):
                    zb[g] = (zb[g] + bi[g]) + bh[g]
        matmul_t(h[k], W_hh[k], P_hh[k], zh)  # forward: zh = h_prev W_hh^T (h[k] read here...)
        for b in range(B):  # (...and overwritten here, one stream at a time)
            forward_step(z[b], zh[b], c[k, b], c_next[k, b], tanh_c, h[k, b])
    matmul_t(h[L - 1], W_dec, P_dec, logits)  # forward: logits = h W_dec^T + b_dec
    for b in range(B):
        lb = logits[b]
        for v in range(lb.shape[0]):
            lb[v] += b_dec[v]


@numba.njit(**_JIT)
def _draw(logits, u, temperature, top_k, top_p, p, sorted_p):
    """One stream's next id from its logits (V,): sample.sample_ids for one stream,
    with uniform u in (0, 1]; p, sorted_p (V,) float64 scratch."""
    V = logits.shape[0]
    if temperature == 0.0:  # argmax, the first of equal maxima (NaN counts as the max)
        best = 0
        for v in range(1, V):
            if math.isnan(logits[best]):
                break
            if logits[v] > logits[best] or math.isnan(logits[v]):
                best = v
        return best
    z_max = -np.inf
    bad = False
    for v in range(V):
        x = np.float64(logits[v])
        bad |= math.isnan(x)
        z_max = max(z_max, x)
    if bad or not math.isfinite(z_max):
        raise FloatingPointError("the model produced non-finite logits")
    for v in range(V):  # (z - max) <= 0: exp cannot overflow
        p[v] = math.exp((np.float64(logits[v]) - z_max) / temperature)
    if top_k < V or top_p < 1.0:
        order = np.argsort(-p, kind="mergesort")  # stable: ties keep the lower id first
        for j in range(V):
            sorted_p[j] = p[order[j]] if j < top_k else 0.0
        if top_p < 1.0:
            total = 0.0
            for j in range(V):
                total += sorted_p[j]
            threshold, cum = top_p * total, 0.0
            for j in range(V):  # keep while the mass strictly before it is below top_p
                cum += sorted_p[j]
                if cum - sorted_p[j] >= threshold:
                    sorted_p[j] = 0.0
        for j in range(V):
            p[order[j]] = sorted_p[j]
    total = 0.0
    for v in range(V):
        total += p[v]
    cdf = 0.0
    for v in range(V):  # cdf of the renormalised p
        cdf += p[v] / total
        p[v] = cdf
    target = u * cdf
    n = 0
    for v in range(V):
        n += p[v] < target
    return n


@numba.njit(**_JIT)
def _prime(prime_ids, weights, state, scratch):
    """Run every stream through the prime ids (P,), one step per id, as generate_ids
    does; the logits after the last one (scratch[3]) give the first draw."""
    ids = np.empty(state[0].shape[1], dtype=np.int64)
    for i in prime_ids:
        ids[:] = i
        _advance(ids, weights, state, scratch)


@numba.njit(**_JIT)
def _advance(ids, weights, state, scratch):
    """One step of every stream on ids (B,): weights from prepare(), state (h, c,
    c_next) each (L, B, H), scratch (z, zh, tanh_c, logits); see _stack_step."""
    h, c, c_next = state
    z, zh, tanh_c, logits = scratch
    _stack_step(ids, weights, h, c, c_next, z, zh, tanh_c, logits)
    # the new cell state becomes the next step's c_prev (a copy of L*B*H numbers: under
    # 0.5% of a step, and it keeps the state in the same arrays from call to call)
    c[...] = c_next


@numba.njit(**_JIT)
def _sample_steps(U, out, advance_last, temperature, top_k, top_p, weights, state, scratch):
    """Draw len(U) steps into out (N, B) from the current logits, advancing the
    stack after each draw (after the last one only if advance_last). U (N, B)."""
    logits = scratch[3]
    B, V = logits.shape
    p = np.empty(V)
    sorted_p = np.empty(V)
    for t in range(U.shape[0]):
        for b in range(B):
            out[t, b] = _draw(logits[b], U[t, b], temperature, top_k, top_p, p, sorted_p)
        if t + 1 < U.shape[0] or advance_last:
            _advance(out[t], weights, state, scratch)


def weight_bytes(params: dict, num_layers: int) -> int:
    """Bytes of the stack's recurrent-layer weights (what each step reads)."""
    return sum(params[f"lstm.weight_{kind}_l{k}"].nbytes
               for k in range(num_layers) for kind in ("ih", "hh"))


def prepare(params: dict, num_layers: int) -> tuple:
    """The weights as _stack_step reads them: pre-scaled, C-contiguous, stacked; each
    matrix W (G, K) also packed (lstm_kernels.pack_columns) for the block-by-block GEMM.
    (table0 (V, G), W_ih (max(L-1, 1), G, H), its packing, b_ih, b_hh (L, G), W_hh
    (L, G, H), its packing, W_dec (V, H), its packing, b_dec (V,))."""
    p = "lstm."
    W_hh0 = params[p + "weight_hh_l0"]
    G, H = W_hh0.shape
    dtype = W_hh0.dtype
    scale = gate_constants(H, dtype)[0]  # (G, 1): 0.5 on the sigmoid rows, exact
    table0 = np.ascontiguousarray(((params[p + "weight_ih_l0"]
                                    + params[p + "bias_ih_l0"][:, None]) * scale).T)
    W_ih = np.stack([params[p + f"weight_ih_l{k}"] * scale for k in range(1, num_layers)]
                    or [np.zeros((G, H), dtype)])
    b_ih = np.stack([params[p + f"bias_ih_l{k}"] * scale[:, 0] for k in range(num_layers)])
    b_hh = np.stack([params[p + f"bias_hh_l{k}"] * scale[:, 0] for k in range(num_layers)])
    W_hh = np.stack([params[p + f"weight_hh_l{k}"] * scale for k in range(num_layers)])
    W_dec = np.ascontiguousarray(params["decoder.weight"])
    return (table0, W_ih, pack_columns(W_ih), b_ih, b_hh, W_hh, pack_columns(W_hh),
            W_dec, pack_columns(W_dec), params["decoder.bias"].copy())


def _buffers(weights: tuple, B: int) -> tuple:
    """Zero state (h, c, c_next) each (L, B, H) and the step's scratch (z, zh (B, G),
    tanh_c (H,), logits (B, V)) for B streams."""
    W_hh, W_dec = weights[5], weights[7]
    L, G, H = W_hh.shape
    V, dtype = W_dec.shape[0], W_dec.dtype
    state = tuple(np.zeros((L, B, H), dtype) for _ in range(3))
    return state, (np.empty((B, G), dtype), np.empty((B, G), dtype), np.empty(H, dtype),
                   np.empty((B, V), dtype))


def generate(weights: tuple, prime_ids: np.ndarray, length: int, rngs, temperature: float,
             top_k: int | None, top_p: float) -> np.ndarray:
    """sample.generate_ids over len(rngs) streams from a zero state, compiled:
    (length, B) int64 ids. weights: prepare(params, L); the other arguments as
    sample.generate_parallel's (already checked)."""
    B, V = len(rngs), weights[7].shape[0]
    state, scratch = _buffers(weights, B)
    out = np.zeros((length, B), dtype=np.int64)
    _prime(np.asarray(prime_ids, dtype=np.int64), weights, state, scratch)
    k = V if top_k is None else min(int(top_k), V)
    for start in range(0, length, CHUNK_STEPS):
        n = min(CHUNK_STEPS, length - start)
        if temperature == 0.0:  # greedy draws no uniforms
            U = np.ones((n, B))
        else:  # u = 1 - random() in (0, 1], as sample_ids draws it
            U = np.stack([1.0 - r.random(n) for r in rngs], axis=1)
        _sample_steps(U, out[start:start + n], start + n < length, float(temperature), k,
                      float(top_p), weights, state, scratch)
    return out


@numba.njit(**_JIT)
def _window_nll(x, y, mask, weights, state, scratch):
    """Summed cross-entropy (float64) of the positions mask (T, B) selects, running
    the window x (T, B) step by step; state (h, c, c_next) (L, B, H) carried in place."""
    logits = scratch[3]
    B, V = logits.shape
    total = 0.0
    for t in range(x.shape[0]):
        _advance(x[t], weights, state, scratch)
        for b in range(B):
            if not mask[t, b]:
                continue
            z = logits[b]
            z_max = -np.inf
            for v in range(V):
                z_max = max(z_max, np.float64(z[v]))
            s = 0.0
            for v in range(V):
                s += math.exp(np.float64(z[v]) - z_max)
            # forward: nll = -log softmax(z)[y] = log sum exp(z - max) - (z[y] - max)
            total += math.log(s) - (np.float64(z[y[t, b]]) - z_max)
    return total


def window_nll(weights: tuple, x: np.ndarray, y: np.ndarray, mask: np.ndarray, state):
    """engine.window_nll for one slice of an LSTM stack, compiled and step-major:
    no (T, B, .) array is ever made. weights: prepare(params, L); x, y (T, B) ids;
    mask (T, B) bool; state: (h, c) each (L, B, H), or None for zeros.
    Returns total nll (float), count (int), final state ((L, B, H) each)."""
    (h, c, c_next), scratch = _buffers(weights, x.shape[1])
    if state is not None:  # copies, updated in place
        h[...], c[...] = state
    ids, targets = (np.ascontiguousarray(a, dtype=np.int64) for a in (x, y))
    total = _window_nll(ids, targets, np.ascontiguousarray(mask, dtype=np.bool_), weights,
                        (h, c, c_next), scratch)
    return total, int(mask.sum()), (h, c)
