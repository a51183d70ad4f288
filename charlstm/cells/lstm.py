"""LSTM recurrence: the window forward/backward pair, a cache-free forward for
evaluation and a single step for sampling (the cell interface of cells/__init__.py).

Shape legend: T time steps, B batch (independent streams), H hidden size,
G = 4H stacked gate pre-activations in PyTorch's order [i | f | g | o].

The input projection (x W_ih^T + b_ih) is computed for the whole window by
the caller in one GEMM (or one gather for one-hot input), so this module only
runs the part that is truly sequential: z_t = xw_t + h_{t-1} W_hh^T + b_hh.

Equations (one step; "*" is element-wise):
    i = sigmoid(z[:, 0H:1H])     input gate
    f = sigmoid(z[:, 1H:2H])     forget gate
    g = tanh(z[:, 2H:3H])        candidate cell
    o = sigmoid(z[:, 3H:4H])     output gate
    c = f*c_prev + i*g
    h = o*tanh(c)

How the time loop is kept cheap (it runs T times per layer, everything else once):
  * sigmoid(z) = 0.5*tanh(z/2) + 0.5, and the halving is folded into the
    weights: the i, f, o rows of W_hh, b_hh and xw are pre-scaled by 0.5 once
    per window (exact: a power of two), so ONE tanh over the whole (B, 4H) block
    and one multiply-add with per-column constants give all four gates.
  * every array the loop writes is allocated before it; the loop only calls
    in-place ufuncs (or one fused numba kernel, see lstm_numba) and one GEMM.
  * the backward loop does only what depends on the running gradient; the
    weight gradient is one GEMM over all T*B rows after the loop.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from .activations import times_T

try:  # optional fused kernels (pip install 'charlstm[fast]')
    from .lstm_numba import KERNELS as _NUMBA_KERNELS
except ImportError:
    _NUMBA_KERNELS = {}

GATES = 4  # blocks of H rows in W_ih / W_hh
STATE_NAMES = ("h", "c")
GATE_NAMES = ("i", "f", "g", "o")
TANH_GATES = ("g",)
# Per-step element-wise maths: "numba" (fused kernels) when numba is installed and
# CHARLSTM_BACKEND is not "numpy", else "numpy". Tests switch it to prove both agree.
BACKEND = ("numba" if _NUMBA_KERNELS and os.environ.get("CHARLSTM_BACKEND") != "numpy"
           else "numpy")


class LSTMCache(NamedTuple):
    h: np.ndarray  # (T+1, B, H) hidden states; h[0] is h0, h[t+1] the output at t
    c: np.ndarray  # (T+1, B, H) cell states; c[0] is c0
    gates: np.ndarray  # (T, B, 4H) post-activation gates [i | f | g | o]
    tanh_c: np.ndarray  # (T, B, H) tanh(c[t+1]), reused by the backward pass
    W_hh: np.ndarray  # (4H, H) recurrent weights


def init_bias(b_ih: np.ndarray, forget_bias: float) -> None:
    """Add the forget-gate bias to the forget block of b_ih (4H,), in place."""
    H = b_ih.shape[0] // GATES
    b_ih[H : 2 * H] += forget_bias


def gate_constants(H: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Per-column (4H,) constants: scale (0.5 on sigmoid columns i, f, o; 1 on g)
    and offset (0.5 on sigmoid columns, 0 on g), so that for pre-scaled z
        act = tanh(z) * scale + offset
    is sigmoid on [i | f | o] and tanh on g."""
    scale = np.full(GATES * H, 0.5, dtype=dtype)
    scale[2 * H : 3 * H] = 1.0
    offset = np.full(GATES * H, 0.5, dtype=dtype)
    offset[2 * H : 3 * H] = 0.0
    return scale, offset


def _gates_(z, scale, offset) -> None:
    """z: (B, 4H) pre-scaled pre-activations -> post-activation gates, in place."""
    np.tanh(z, out=z)
    z *= scale
    z += offset


def _cell_(gates, c_prev, c_out, tanh_out, h_out, ig) -> None:
    """c = f*c_prev + i*g; h = o*tanh(c), writing into the given (B, H) arrays."""
    H = c_prev.shape[-1]
    np.multiply(gates[:, H : 2 * H], c_prev, out=c_out)  # f*c_prev
    np.multiply(gates[:, :H], gates[:, 2 * H : 3 * H], out=ig)  # i*g
    c_out += ig
    np.tanh(c_out, out=tanh_out)
    np.multiply(gates[:, 3 * H :], tanh_out, out=h_out)  # o*tanh(c)


def _numba(dtype):
    """(forward_step, backward_step) numba kernels for dtype, or None for NumPy."""
    return _NUMBA_KERNELS.get(np.dtype(dtype)) if BACKEND == "numba" else None


def cell_step(z, zh, c_prev, c_out, tanh_out, h_out, ig, scale, offset) -> None:
    """One forward step after the GEMM: z (B, 4H) pre-scaled input part, zh (B, 4H)
    the recurrent part; z becomes the gates, and c, tanh(c), h are written out.
    ig is (B, H) scratch; scale, offset are gate_constants()."""
    nb = _numba(z.dtype)
    if nb is not None:
        nb[0](z, zh, c_prev, c_out, tanh_out, h_out)
        return
    z += zh
    _gates_(z, scale, offset)
    _cell_(z, c_prev, c_out, tanh_out, h_out, ig)


def _prescaled(xw, W_hh, b_hh, overwrite_xw):
    """The gate buffer (xw + b_hh) * scale (T, B, 4H) and (W_hh * scale)^T as a
    C-contiguous (H, 4H) array: the scaled copy is needed anyway, and making it in
    the layout the GEMM reads row by row speeds up every step's GEMM by ~5-10%."""
    H = W_hh.shape[1]
    scale, offset = gate_constants(H, xw.dtype)
    if overwrite_xw:
        z = xw
        z += b_hh
    else:
        z = np.add(xw, b_hh, dtype=xw.dtype)
    z *= scale
    return z, np.multiply(W_hh.T, scale, order="C"), scale, offset


def forward(xw, state0, W_hh, b_hh, overwrite_xw=False):
    """Run the LSTM recurrence over a window.

    Args:
        xw: (T, B, 4H) input projection x_t W_ih^T + b_ih for every step.
        state0: (h0, c0), each (B, H).
        W_hh: (4H, H) recurrent weights.  b_hh: (4H,) recurrent bias.
        overwrite_xw: let the cache's gate buffer reuse xw's memory (the caller
            must not read xw afterwards); saves one (T, B, 4H) array.
    Returns:
        hs: (T, B, H) hidden outputs, (hT, cT) each (B, H), and an LSTMCache.
    """
    T, B, G = xw.shape
    H = G // GATES
    gates, W_s_T, scale, offset = _prescaled(xw, W_hh, b_hh, overwrite_xw)
    h = np.empty((T + 1, B, H), dtype=xw.dtype)
    c = np.empty((T + 1, B, H), dtype=xw.dtype)
    tanh_c = np.empty((T, B, H), dtype=xw.dtype)
    zh = np.empty((B, G), dtype=xw.dtype)  # h_{t-1} W_hh^T for one step
    ig = np.empty((B, H), dtype=xw.dtype)  # scratch for i*g
    h[0] = state0[0]
    c[0] = state0[1]
    for t in range(T):
        np.matmul(h[t], W_s_T, out=zh)  # all four gates in one GEMM
        cell_step(gates[t], zh, c[t], c[t + 1], tanh_c[t], h[t + 1], ig, scale, offset)
    cache = LSTMCache(h=h, c=c, gates=gates, tanh_c=tanh_c, W_hh=W_hh)
    return h[1:], (h[T].copy(), c[T].copy()), cache


def infer(xw, state0, W_hh, b_hh, overwrite_xw=False):
    """forward() without a cache, for evaluation and sampling.

    Same arguments as forward(); returns hs (T, B, H) and (hT, cT) each (B, H).
    Only hs and two (B, H) state buffers are kept, so memory does not grow with
    anything but the output.
    """
    T, B, G = xw.shape
    H = G // GATES
    gates, W_s_T, scale, offset = _prescaled(xw, W_hh, b_hh, overwrite_xw)
    hs = np.empty((T, B, H), dtype=xw.dtype)
    c = np.array(state0[1], dtype=xw.dtype)  # updated in place step by step
    c_next = np.empty_like(c)
    tanh_c = np.empty_like(c)
    zh = np.empty((B, G), dtype=xw.dtype)
    ig = np.empty((B, H), dtype=xw.dtype)
    h_prev = np.asarray(state0[0], dtype=xw.dtype)
    for t in range(T):
        np.matmul(h_prev, W_s_T, out=zh)
        cell_step(gates[t], zh, c, c_next, tanh_c, hs[t], ig, scale, offset)
        c, c_next = c_next, c
        h_prev = hs[t]
    return hs, (hs[T - 1].copy() if T else h_prev.copy(), c)


def step(xw, state0, W_hh, b_hh, out) -> None:
    """One step with no window machinery (sampling): no (T, B, .) arrays, no cache,
    no weight copies; one GEMV for the recurrence and one fused gate update.

    Args:
        xw: (B, 4H) input projection x W_ih^T + b_ih; overwritten (it becomes the gates).
        state0: (h_prev, c_prev), each (B, H).  W_hh: (4H, H).  b_hh: (4H,).
        out: (h, c), each (B, H), written with the new state.
    """
    H = W_hh.shape[1]
    scale, offset = gate_constants(H, xw.dtype)
    xw += b_hh
    xw *= scale  # cell_step wants pre-scaled pre-activations
    zh = times_T(state0[0], W_hh)
    zh *= scale
    tanh_c, ig = np.empty_like(out[1]), np.empty_like(out[1])
    cell_step(xw, zh, state0[1], out[1], tanh_c, out[0], ig, scale, offset)


def keep_gate(cache: LSTMCache) -> np.ndarray:
    """The forget gate f (T, B, H) of the window: c = f*c_prev + i*g."""
    H = cache.c.shape[-1]
    return cache.gates[..., H : 2 * H]


def activations(cache: LSTMCache) -> dict[str, np.ndarray]:
    """(T, B, H) views: h and c after each step, then the gates i, f, g, o."""
    H = cache.c.shape[-1]
    gates = {name: cache.gates[..., j * H:(j + 1) * H] for j, name in enumerate(GATE_NAMES)}
    return {"h": cache.h[1:], "c": cache.c[1:], **gates}


def _backward_factors(gates, c_prev, tanh_c, F, A) -> None:
    """The parts of dL/dz that do not depend on the running gradients, for a
    chunk of K steps at once (shapes (K, B, 4H) and (K, B, H)):

        F = [g*i(1-i) | c_prev*f(1-f) | i(1-g^2) | tanh(c)*o(1-o)]   (K, B, 4H)
        A = o*(1 - tanh(c)^2)                                          (K, B, H)

    so that one step of the backward loop is dz = [dc, dc, dc, dh] * F and
    dc += dh*A. Sigmoid and tanh derivatives come from the cached outputs.
    """
    K, B, G = gates.shape
    H = G // GATES
    one = gates.dtype.type(1.0)
    g4 = gates.reshape(K, B, GATES, H)
    F4 = F.reshape(K, B, GATES, H)
    i, g, o = g4[:, :, 0], g4[:, :, 2], g4[:, :, 3]
    np.subtract(one, g4, out=F4)
    F4 *= g4  # s(1-s) in every block; the g block is replaced next
    np.multiply(g, g, out=F4[:, :, 2])
    np.subtract(one, F4[:, :, 2], out=F4[:, :, 2])  # 1-g^2
    F4[:, :, 0] *= g
    F4[:, :, 1] *= c_prev
    F4[:, :, 2] *= i
    F4[:, :, 3] *= tanh_c
    np.multiply(tanh_c, tanh_c, out=A)
    np.subtract(one, A, out=A)
    A *= o


def _chunk_steps(B, G, itemsize) -> int:
    """Steps per chunk of backward factors: about 256 KiB, so a chunk stays in cache."""
    return max(1, (1 << 18) // (B * G * itemsize))


def backward(dhs, dstateT, cache: LSTMCache):
    """Backpropagate through the window: the forward pass read upside down.

    Args:
        dhs: (T, B, H) dL/dh_t from the layer above (or the decoder).
        dstateT: (dhT, dcT), each (B, H): gradient flowing into the final state
            from the next window (zeros when the window is the last).
    Returns:
        dxw (T, B, 4H) = dL/dz, (dh0, dc0) each (B, H), dW_hh (4H, H), db_hh (4H,).
    """
    h, c, gates, tanh_c, W_hh = cache
    T, B, G = gates.shape
    H = G // GATES
    dz_all = np.empty((T, B, G), dtype=gates.dtype)
    dh = np.array(dstateT[0], dtype=gates.dtype)  # running dL/dh_t (copy: updated in place)
    dc = np.array(dstateT[1], dtype=gates.dtype)  # running dL/dc_t
    nb = _numba(gates.dtype)
    if nb is not None:
        for t in reversed(range(T)):
            nb[1](dz_all[t], gates[t], c[t], tanh_c[t], dh, dhs[t], dc)  # dz; dc -> dc_{t-1}
            np.matmul(dz_all[t], W_hh, out=dh)  # dL/dh_{t-1} (before adding dhs[t-1])
    else:
        _backward_loop_numpy(dhs, h, c, gates, tanh_c, W_hh, dz_all, dh, dc)
    dz_flat = dz_all.reshape(T * B, G)
    dW_hh = dz_flat.T @ h[:-1].reshape(T * B, H)  # one GEMM for all steps
    db_hh = dz_flat.sum(axis=0)
    return dz_all, (dh, dc), dW_hh, db_hh


def _backward_loop_numpy(dhs, h, c, gates, tanh_c, W_hh, dz_all, dh, dc) -> None:
    """The backward time loop in NumPy ufuncs: fills dz_all, updates dh, dc in place.
    The factors F (see _backward_factors) are written into dz_all a chunk of steps
    at a time and then multiplied by the running gradients step by step."""
    T, B, G = gates.shape
    H = G // GATES
    dz4 = dz_all.reshape(T, B, GATES, H)  # a view: per-gate blocks
    K = _chunk_steps(B, G, gates.itemsize)
    A = np.empty((K, B, H), dtype=gates.dtype)
    tmp = np.empty((B, H), dtype=gates.dtype)
    for t1 in range(T, 0, -K):
        t0 = max(0, t1 - K)
        _backward_factors(gates[t0:t1], c[t0:t1], tanh_c[t0:t1], dz_all[t0:t1], A[: t1 - t0])
        for t in reversed(range(t0, t1)):
            dz = dz_all[t]
            dh += dhs[t]
            # forward: h = o*tanh(c)  ->  do = dh * tanh(c)*o(1-o);  dc += dh * o(1-tanh(c)^2)
            dz[:, 3 * H :] *= dh
            np.multiply(dh, A[t - t0], out=tmp)
            dc += tmp  # the cell gets gradient from h_t and from c_{t+1} (the carousel)
            # forward: c = f*c_prev + i*g  ->  [di | df | dg] = dc * [g | c_prev | i] * act'
            dz4[t, :, :3] *= dc[:, None, :]
            dc *= gates[t, :, H : 2 * H]  # now dL/dc_{t-1}
            # forward: z = xw + h_prev W_hh^T + b_hh
            np.matmul(dz, W_hh, out=dh)  # now dL/dh_{t-1} (before adding dhs[t-1])
