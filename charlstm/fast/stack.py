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
the GEMMs run feature-major (W h^T rather than h W^T), and the sums are sequential
where NumPy's are pairwise. The uniforms are those the Generators would give one
call at a time: rng.random(n) draws the same doubles as n calls of rng.random(),
so they are drawn ahead, per chunk, in Python.

Everything inside is feature-major, as the fast LSTM's time loops: the state h, c is
(L, H, B), the gates (G, B), the logits (V, B), all C-contiguous.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from . import lstm_kernels
from .layout import gate_constants, loop_width
from .lstm_kernels import _JIT, forward_step

if not hasattr(lstm_kernels, "matmul_into"):  # NumPy's BLAS could not be bound
    raise ImportError("no CBLAS GEMM in NumPy's BLAS: sampling uses the generic loop")
matmul_into = lstm_kernels.matmul_into
# The SHA-256 of lstm_kernels.py, whose kernels compile into this file's: editing it
# must edit this file, or numba would keep this file's cached loops (see lstm_kernels).
KERNELS_SOURCE_SHA256 = "51319295620303dbd1c347bfd6052260e8d7209d0983090027fcec3269cfa558"

# Steps per compiled call: the uniforms for one chunk are drawn ahead in Python.
CHUNK_STEPS = 256


@numba.njit(**_JIT)
def _stack_step(ids, table0, W_ih, b_ih, b_hh, W_hh, W_dec, b_dec, h, c, c_next,
                z, zh, tanh_c, logits):
    """One character per stream through the stack (model.step, feature-major).

    ids (B,); table0 (G, V) = ((W_ih_l0 + b_ih_l0[:, None]) * scale); W_ih (max(L-1,
    1), G, H) layers 1.. pre-scaled; b_ih, b_hh (L, G) pre-scaled (b_ih[0] unused);
    W_hh (L, G, H) pre-scaled; W_dec (V, H); b_dec (V,); h (L, H, B) updated in
    place; c -> c_next (L, H, B); z, zh (G, B), tanh_c (H, B) scratch; logits (V, B).
    """
    L, G, B = h.shape[0], z.shape[0], z.shape[1]
    for k in range(L):
        if k == 0:  # forward: xw = W_ih[:, x] + b_ih (a column gather), z = xw + b_hh
            for g in range(G):
                row, bias = table0[g], b_hh[0, g]
                for b in range(B):
                    z[g, b] = row[ids[b]] + bias
        else:  # forward: xw = W_ih h_below^T + b_ih, z = xw + b_hh
            matmul_into(W_ih[k - 1], h[k - 1], z)
            for g in range(G):
                bi, bh = b_ih[k, g], b_hh[k, g]
                for b in range(B):
                    z[g, b] = (z[g, b] + bi) + bh
        matmul_into(W_hh[k], h[k], zh)  # forward: zh = W_hh h_prev^T (h[k] read here...)
        forward_step(z, zh, c[k], c_next[k], tanh_c, h[k])  # (...and overwritten here)
    matmul_into(W_dec, h[L - 1], logits)  # forward: logits = h W_dec^T + b_dec
    for v in range(logits.shape[0]):
        for b in range(B):
            logits[v, b] += b_dec[v]


@numba.njit(**_JIT)
def _draw(logits, b, u, temperature, top_k, top_p, p, sorted_p):
    """Stream b's next id from logits (V, B): sample.sample_ids for one stream, with
    uniform u in (0, 1]; p, sorted_p (V,) float64 scratch."""
    V = logits.shape[0]
    if temperature == 0.0:  # argmax, the first of equal maxima (NaN counts as the max)
        best = 0
        for v in range(1, V):
            if math.isnan(logits[best, b]):
                break
            if logits[v, b] > logits[best, b] or math.isnan(logits[v, b]):
                best = v
        return best
    z_max = -np.inf
    bad = False
    for v in range(V):
        x = np.float64(logits[v, b])
        bad |= math.isnan(x)
        z_max = max(z_max, x)
    if bad or not math.isfinite(z_max):
        raise FloatingPointError("the model produced non-finite logits")
    for v in range(V):  # (z - max) <= 0: exp cannot overflow
        p[v] = math.exp((np.float64(logits[v, b]) - z_max) / temperature)
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
    ids = np.empty(state[0].shape[2], dtype=np.int64)
    for i in prime_ids:
        ids[:] = i
        _advance(ids, weights, state, scratch)


@numba.njit(**_JIT)
def _advance(ids, weights, state, scratch):
    """One step of every stream on ids (B,): weights from prepare(), state (h, c,
    c_next) each (L, H, B), scratch (z, zh, tanh_c, logits); see _stack_step."""
    table0, W_ih, b_ih, b_hh, W_hh, W_dec, b_dec = weights
    h, c, c_next = state
    z, zh, tanh_c, logits = scratch
    _stack_step(ids, table0, W_ih, b_ih, b_hh, W_hh, W_dec, b_dec, h, c, c_next,
                z, zh, tanh_c, logits)
    # the new cell state becomes the next step's c_prev (a copy of L*H*B numbers: under
    # 0.5% of a step, and it keeps the state in the same arrays from call to call)
    c[...] = c_next


@numba.njit(**_JIT)
def _sample_steps(U, out, advance_last, temperature, top_k, top_p, weights, state, scratch):
    """Draw len(U) steps into out (N, n) from the current logits, advancing the
    stack after each draw (after the last one only if advance_last). U (N, B): the
    streams past B are padding (see generate) and keep id 0."""
    logits = scratch[3]
    V, B = logits.shape[0], U.shape[1]
    p = np.empty(V)
    sorted_p = np.empty(V)
    for t in range(U.shape[0]):
        for b in range(B):
            out[t, b] = _draw(logits, b, U[t, b], temperature, top_k, top_p, p, sorted_p)
        if t + 1 < U.shape[0] or advance_last:
            _advance(out[t], weights, state, scratch)


def weight_bytes(params: dict, num_layers: int) -> int:
    """Bytes of the stack's recurrent-layer weights (what each step reads)."""
    return sum(params[f"lstm.weight_{kind}_l{k}"].nbytes
               for k in range(num_layers) for kind in ("ih", "hh"))


def prepare(params: dict, num_layers: int) -> tuple:
    """The weights as _stack_step reads them: pre-scaled, C-contiguous, stacked."""
    p = "lstm."
    W_hh0 = params[p + "weight_hh_l0"]
    G, H = W_hh0.shape
    dtype = W_hh0.dtype
    scale = gate_constants(H, dtype)[0]  # (G, 1): 0.5 on the sigmoid rows, exact
    table0 = np.ascontiguousarray((params[p + "weight_ih_l0"] + params[p + "bias_ih_l0"][:, None])
                                  * scale)
    W_ih = np.stack([params[p + f"weight_ih_l{k}"] * scale for k in range(1, num_layers)]
                    or [np.zeros((G, H), dtype)])
    b_ih = np.stack([params[p + f"bias_ih_l{k}"] * scale[:, 0] for k in range(num_layers)])
    b_hh = np.stack([params[p + f"bias_hh_l{k}"] * scale[:, 0] for k in range(num_layers)])
    W_hh = np.stack([params[p + f"weight_hh_l{k}"] * scale for k in range(num_layers)])
    return (table0, W_ih, b_ih, b_hh, W_hh,
            np.ascontiguousarray(params["decoder.weight"]), params["decoder.bias"].copy())


def generate(weights: tuple, prime_ids: np.ndarray, length: int, rngs, temperature: float,
             top_k: int | None, top_p: float) -> np.ndarray:
    """sample.generate_ids over len(rngs) streams from a zero state, compiled:
    (length, B) int64 ids. weights: prepare(params, L); the other arguments as
    sample.generate_parallel's (already checked)."""
    W_hh, W_dec = weights[4], weights[5]
    num_layers, G, H = W_hh.shape
    V, dtype, B = W_dec.shape[0], W_dec.dtype, len(rngs)
    width = loop_width(B, W_hh[0])  # padded as window_nll's streams; never drawn for
    state = tuple(np.zeros((num_layers, H, width), dtype) for _ in range(3))
    scratch = (np.empty((G, width), dtype), np.empty((G, width), dtype),
               np.empty((H, width), dtype), np.empty((V, width), dtype))
    out = np.zeros((length, width), dtype=np.int64)
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
    return np.ascontiguousarray(out[:, :B])


@numba.njit(**_JIT)
def _window_nll(x, y, mask, weights, state, scratch):
    """Summed cross-entropy (float64) of the positions mask (T, B) selects, running
    the window x (T, B) step by step; state (h, c, c_next) (L, H, B) carried in place."""
    logits = scratch[3]
    V, B = logits.shape
    total = 0.0
    for t in range(x.shape[0]):
        _advance(x[t], weights, state, scratch)
        for b in range(B):
            if not mask[t, b]:
                continue
            z_max = -np.inf
            for v in range(V):
                z_max = max(z_max, np.float64(logits[v, b]))
            s = 0.0
            for v in range(V):
                s += math.exp(np.float64(logits[v, b]) - z_max)
            # forward: nll = -log softmax(z)[y] = log sum exp(z - max) - (z[y] - max)
            total += math.log(s) - (np.float64(logits[y[t, b], b]) - z_max)
    return total


def columns(weights: tuple, B: int) -> int:
    """The columns window_nll and generate run B streams in (layout.loop_width): what
    a step costs, near enough, for the engine's plans."""
    return loop_width(B, weights[4][0])


def window_nll(weights: tuple, x: np.ndarray, y: np.ndarray, mask: np.ndarray, state):
    """engine.window_nll for one slice of an LSTM stack, compiled and step-major:
    no (T, B, .) array is ever made. weights: prepare(params, L); x, y (T, B) ids;
    mask (T, B) bool; state: (h, c) each (L, B, H), or None for zeros.
    Returns total nll (float), count (int), final state ((L, B, H) each)."""
    W_hh, W_dec = weights[4], weights[5]
    L, G, H = W_hh.shape
    V, dtype, (T, B) = W_dec.shape[0], W_dec.dtype, x.shape
    # n >= B columns, as the fast LSTM's time loops (layout.loop_width): the extra streams
    # read id 0, count for nothing (mask False) and never mix with the real ones
    n = loop_width(B, W_hh[0])
    h, c = (np.zeros((L, H, n), dtype) for _ in range(2))
    if state is not None:  # feature-major copies, updated in place
        for whole, part in zip((h, c), state):
            whole[:, :, :B] = part.transpose(0, 2, 1)
    ids, targets, counts = (np.zeros((T, n), np.int64), np.zeros((T, n), np.int64),
                            np.zeros((T, n), np.bool_))
    ids[:, :B], targets[:, :B], counts[:, :B] = x, y, mask
    scratch = (np.empty((G, n), dtype), np.empty((G, n), dtype), np.empty((H, n), dtype),
               np.empty((V, n), dtype))
    total = _window_nll(ids, targets, counts, weights, (h, c, np.empty_like(c)), scratch)
    return total, int(mask.sum()), tuple(a[:, :, :B].transpose(0, 2, 1).copy() for a in (h, c))
