"""LSTM recurrence over a whole window: pure forward/backward pair.

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
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

GATES = 4  # blocks of H rows in W_ih / W_hh
STATE_NAMES = ("h", "c")


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


def _sigmoid_(x: np.ndarray) -> None:
    """In-place logistic sigmoid via tanh: never overflows, no temporaries."""
    x *= 0.5
    np.tanh(x, out=x)
    x *= 0.5
    x += 0.5


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
    h0, c0 = state0
    h = np.empty((T + 1, B, H), dtype=xw.dtype)
    c = np.empty((T + 1, B, H), dtype=xw.dtype)
    gates = np.empty((T, B, G), dtype=xw.dtype)
    tanh_c = np.empty((T, B, H), dtype=xw.dtype)
    ig = np.empty((B, H), dtype=xw.dtype)  # scratch for i*g
    h[0] = h0
    c[0] = c0
    W_hh_T = W_hh.T
    for t in range(T):
        z = gates[t]
        np.matmul(h[t], W_hh_T, out=z)  # all four gates in one GEMM
        z += xw[t]
        z += b_hh
        _sigmoid_(z[:, : 2 * H])  # i, f
        np.tanh(z[:, 2 * H : 3 * H], out=z[:, 2 * H : 3 * H])  # g
        _sigmoid_(z[:, 3 * H :])  # o
        i, f, g, o = z[:, :H], z[:, H : 2 * H], z[:, 2 * H : 3 * H], z[:, 3 * H :]
        np.multiply(f, c[t], out=c[t + 1])  # c = f*c_prev + i*g
        np.multiply(i, g, out=ig)
        c[t + 1] += ig
        np.tanh(c[t + 1], out=tanh_c[t])  # h = o*tanh(c)
        np.multiply(o, tanh_c[t], out=h[t + 1])
    cache = LSTMCache(h=h, c=c, gates=gates, tanh_c=tanh_c, W_hh=W_hh)
    return h[1:], (h[T].copy(), c[T].copy()), cache


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
    dz_all = np.empty_like(gates)
    dh = np.array(dstateT[0], dtype=gates.dtype)  # running dL/dh_t (copy: updated in place)
    dc = np.array(dstateT[1], dtype=gates.dtype)  # running dL/dc_t
    tmp = np.empty((B, H), dtype=gates.dtype)
    for t in reversed(range(T)):
        i, f, g, o = (gates[t, :, k * H : (k + 1) * H] for k in range(4))
        dz = dz_all[t]
        di, df, dg, do = (dz[:, k * H : (k + 1) * H] for k in range(4))
        dh += dhs[t]
        # forward: h = o*tanh(c)
        np.multiply(dh, tanh_c[t], out=do)
        np.multiply(tanh_c[t], tanh_c[t], out=tmp)  # tmp = tanh(c)^2
        np.subtract(1.0, tmp, out=tmp)
        tmp *= o
        tmp *= dh
        dc += tmp  # the cell gets gradient from h_t and from c_{t+1} (the carousel)
        # forward: c = f*c_prev + i*g
        np.multiply(dc, g, out=di)
        np.multiply(dc, c[t], out=df)
        np.multiply(dc, i, out=dg)
        dc *= f  # now dL/dc_{t-1}
        # forward: i, f, o = sigmoid(.), g = tanh(.) -- derivatives from the outputs
        for gate, dgate in ((i, di), (f, df), (o, do)):
            np.subtract(1.0, gate, out=tmp)
            tmp *= gate
            dgate *= tmp  # sigmoid' = s*(1-s)
        np.multiply(g, g, out=tmp)
        np.subtract(1.0, tmp, out=tmp)
        dg *= tmp  # tanh' = 1-g^2
        # forward: z = xw + h_prev W_hh^T + b_hh
        np.matmul(dz, W_hh, out=dh)  # now dL/dh_{t-1} (before adding dhs[t-1])
    dz_flat = dz_all.reshape(T * B, G)
    dW_hh = dz_flat.T @ h[:-1].reshape(T * B, H)  # one GEMM for all steps
    db_hh = dz_flat.sum(axis=0)
    return dz_all, (dh, dc), dW_hh, db_hh
