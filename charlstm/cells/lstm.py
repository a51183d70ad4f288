"""LSTM recurrence as derived (docs/derivation.md): the window forward/backward pair,
a cache-free forward and a single step (the cell interface of cells/__init__.py).

Shape legend: T time steps, B batch (independent streams), H hidden size,
G = 4H stacked gate rows in torch.nn.LSTM's order [i | f | g | o].

The caller computes xw = x W_ih^T + b_ih for the window. This module runs the
sequential part, with all four recurrent products in one GEMM per step.

Equations (one step; "*" is element-wise):
    z = xw + h_prev W_hh^T + b_hh                 (B, 4H) pre-activations
    i = sigmoid(z[:, 0H:1H])                      input gate
    f = sigmoid(z[:, 1H:2H])                      forget gate
    g = tanh(z[:, 2H:3H])                         candidate cell
    o = sigmoid(z[:, 3H:4H])                      output gate
    c = f*c_prev + i*g
    h = o*tanh(c)

This is the reference: the model runs charlstm.fast.lstm, the same maths laid out
for the CPU, wherever the fast wing's settings allow, and tests/test_fast_lstm.py
proves the two equal.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .activations import sigmoid_

GATES = 4  # blocks of H rows in W_ih / W_hh
STATE_NAMES = ("h", "c")
GATE_NAMES = ("i", "f", "g", "o")
TANH_GATES = ("g",)


class LSTMCache(NamedTuple):
    h: np.ndarray  # (T+1, B, H) hidden states; h[0] is h0, h[t+1] the output at t
    c: np.ndarray  # (T+1, B, H) cell states; c[0] is c0
    gates: np.ndarray  # (T, B, 4H) post-activation gates [i | f | g | o]
    tanh_c: np.ndarray  # (T, B, H) tanh(c[t+1]), reused by the backward pass
    W_hh: np.ndarray  # (4H, H) recurrent weights


def init_bias(b_ih: np.ndarray, forget_bias: float) -> None:
    """Add forget_bias to the forget-gate (f) block of b_ih (4H,), in place: at init
    the cell keeps sigma(1) ~ 73% of its state per step instead of 50%."""
    H = b_ih.shape[0] // GATES
    b_ih[H : 2 * H] += forget_bias


def _step(xw, h_prev, c_prev, W_hh_T, b_hh, z, c_out, tanh_out, h_out) -> None:
    """One step: xw (B, 4H), h_prev, c_prev (B, H), W_hh_T (H, 4H) -> z (B, 4H)
    becomes the gates [i | f | g | o]; c_out, tanh_out = tanh(c), h_out (B, H)."""
    H = c_prev.shape[-1]
    np.add(xw, b_hh, out=z)
    z += h_prev @ W_hh_T  # z = xw + h_prev W_hh^T + b_hh, all gates in one GEMM
    i, f, g, o = (z[:, k * H : (k + 1) * H] for k in range(GATES))
    sigmoid_(z[:, : 2 * H])  # i, f
    np.tanh(g, out=g)
    sigmoid_(o)
    np.multiply(f, c_prev, out=c_out)  # c = f*c_prev + i*g
    c_out += i * g
    np.tanh(c_out, out=tanh_out)
    np.multiply(o, tanh_out, out=h_out)  # h = o*tanh(c)


def forward(xw, state0, W_hh, b_hh):
    """Run the LSTM recurrence over a window.

    Args:
        xw: (T, B, 4H) input projection x_t W_ih^T + b_ih for every step.
        state0: (h0, c0), each (B, H).
        W_hh: (4H, H) recurrent weights.  b_hh: (4H,) recurrent bias.
    Returns:
        hs: (T, B, H) hidden outputs, (hT, cT) each (B, H), and an LSTMCache.
    """
    T, B, G = xw.shape
    H = G // GATES
    h = np.empty((T + 1, B, H), dtype=xw.dtype)
    c = np.empty((T + 1, B, H), dtype=xw.dtype)
    gates = np.empty((T, B, G), dtype=xw.dtype)
    tanh_c = np.empty((T, B, H), dtype=xw.dtype)
    h[0], c[0] = state0
    for t in range(T):
        _step(xw[t], h[t], c[t], W_hh.T, b_hh, gates[t], c[t + 1], tanh_c[t], h[t + 1])
    cache = LSTMCache(h=h, c=c, gates=gates, tanh_c=tanh_c, W_hh=W_hh)
    return h[1:], (h[T].copy(), c[T].copy()), cache


def infer(xw, state0, W_hh, b_hh):
    """forward() without a cache: same arguments, returns hs (T, B, H) and (hT, cT)."""
    T, B, G = xw.shape
    H = G // GATES
    hs = np.empty((T, B, H), dtype=xw.dtype)
    z = np.empty((B, G), dtype=xw.dtype)
    c, c_next, tanh_c = (np.empty((B, H), dtype=xw.dtype) for _ in range(3))
    h_prev, c[...] = np.asarray(state0[0], dtype=xw.dtype), state0[1]
    for t in range(T):
        _step(xw[t], h_prev, c, W_hh.T, b_hh, z, c_next, tanh_c, hs[t])
        c, c_next = c_next, c
        h_prev = hs[t]
    return hs, (h_prev.copy(), c)


def step(xw, state0, W_hh, b_hh, out) -> None:
    """One step for sampling: xw (B, 4H), state0 (h_prev, c_prev), out (h, c), each (B, H)."""
    B, G = xw.shape
    z, tanh_c = np.empty((B, G), dtype=xw.dtype), np.empty((B, G // GATES), dtype=xw.dtype)
    _step(xw, state0[0], state0[1], W_hh.T, b_hh, z, out[1], tanh_c, out[0])


def activations(cache: LSTMCache) -> dict[str, np.ndarray]:
    """(T, B, H) views: h and c after each step, then the gates i, f, g, o."""
    H = cache.h.shape[-1]
    gates = {name: cache.gates[..., j * H : (j + 1) * H] for j, name in enumerate(GATE_NAMES)}
    return {"h": cache.h[1:], "c": cache.c[1:], **gates}


def keep_gate(cache: LSTMCache) -> np.ndarray:
    """The forget gate f (T, B, H) of the window: c = f*c_prev + i*g."""
    H = cache.h.shape[-1]
    return cache.gates[..., H : 2 * H]


def backward(dhs, dstateT, cache: LSTMCache):
    """Backpropagate through the window: the forward pass read upside down.

    Args:
        dhs: (T, B, H) dL/dh_t from the layer above (or the decoder).
        dstateT: (dhT, dcT), each (B, H), from the next window (zeros for the last).
    Returns:
        dxw (T, B, 4H) = dL/dz, (dh0, dc0) each (B, H), dW_hh (4H, H), db_hh (4H,).
    """
    h, c, gates, tanh_c, W_hh = cache
    T, B, G = gates.shape
    H = G // GATES
    one = gates.dtype.type(1.0)
    dz_all = np.empty_like(gates)  # dL/dz for every step
    dh = np.array(dstateT[0], dtype=gates.dtype)  # running dL/dh_t (copy: updated in place)
    dc = np.array(dstateT[1], dtype=gates.dtype)  # running dL/dc_t
    for t in reversed(range(T)):
        i, f, g, o = (gates[t, :, k * H : (k + 1) * H] for k in range(GATES))
        di, df, dg, do = (dz_all[t, :, k * H : (k + 1) * H] for k in range(GATES))
        dh += dhs[t]  # the two paths into h_t: the layer above and step t+1
        # forward: h = o*tanh(c); o = sigmoid(.), so do/dz_o = o(1-o)
        np.multiply(dh * tanh_c[t], o * (one - o), out=do)
        dc += dh * o * (one - tanh_c[t] * tanh_c[t])  # and dc_t from step t+1
        # forward: c = f*c_prev + i*g; i, f sigmoids, g = tanh(.) so dg/dz_g = 1-g^2
        np.multiply(dc * g, i * (one - i), out=di)
        np.multiply(dc * c[t], f * (one - f), out=df)
        np.multiply(dc * i, one - g * g, out=dg)
        dc *= f  # now dL/dc_{t-1}
        # forward: z = xw + h_prev W_hh^T + b_hh
        dh = dz_all[t] @ W_hh  # now dL/dh_{t-1} (before adding dhs[t-1])
    dz_flat = dz_all.reshape(T * B, G)
    dW_hh = dz_flat.T @ h[:-1].reshape(T * B, H)  # one GEMM for all steps
    db_hh = dz_flat.sum(axis=0)
    return dz_all, (dh, dc), dW_hh, db_hh
