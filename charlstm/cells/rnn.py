"""Vanilla tanh RNN recurrence: the window forward/backward pair, a cache-free
forward and a single step (the cell interface of cells/__init__.py).

Shape legend: T time steps, B batch (independent streams), H hidden size.
Parameters follow torch.nn.RNN (nonlinearity="tanh"): W_ih (H, D), W_hh (H, H),
b_ih (H,), b_hh (H,). The caller computes xw = x W_ih^T + b_ih for the window.

Equation (one step):
    h = tanh(xw + h_prev W_hh^T + b_hh)

Its backward multiplies the gradient by W_hh diag(1 - h^2) at every step,
which is why it vanishes (or explodes) over long distances; see docs/gradflow.md.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

GATES = 1  # blocks of H rows in W_ih / W_hh
STATE_NAMES = ("h",)
GATE_NAMES = ()  # its one block of W_ih rows is h's own pre-activation
TANH_GATES = ()


class RNNCache(NamedTuple):
    h: np.ndarray  # (T+1, B, H) hidden states; h[0] is h0, h[t+1] the output at t
    W_hh: np.ndarray  # (H, H) recurrent weights


def init_bias(b_ih: np.ndarray, forget_bias: float) -> None:
    """Nothing to do: a vanilla RNN has no gate to bias (forget_bias is ignored)."""


def _step(xw, h_prev, W_hh_T, b_hh, h_out) -> None:
    """One step: h = tanh(xw + h_prev W_hh^T + b_hh), all (B, H), written into h_out."""
    np.matmul(h_prev, W_hh_T, out=h_out)
    h_out += xw
    h_out += b_hh
    np.tanh(h_out, out=h_out)


def forward(xw, state0, W_hh, b_hh):
    """Run the tanh recurrence over a window.

    Args:
        xw: (T, B, H) input projection x_t W_ih^T + b_ih for every step.
        state0: (h0,) with h0 (B, H).
        W_hh: (H, H) recurrent weights.  b_hh: (H,) recurrent bias.
    Returns:
        hs: (T, B, H) hidden outputs, (hT,) with hT (B, H), and an RNNCache.
    """
    T, B, H = xw.shape
    h = np.empty((T + 1, B, H), dtype=xw.dtype)
    h[0] = state0[0]
    for t in range(T):
        _step(xw[t], h[t], W_hh.T, b_hh, h[t + 1])
    return h[1:], (h[T].copy(),), RNNCache(h=h, W_hh=W_hh)


def infer(xw, state0, W_hh, b_hh):
    """forward() without a cache. The RNN's cache is its outputs plus h0, so this
    is forward() with the cache dropped: hs (T, B, H) and (hT,)."""
    hs, stateT, _ = forward(xw, state0, W_hh, b_hh)
    return hs, stateT


def step(xw, state0, W_hh, b_hh, out) -> None:
    """One step for sampling: xw (B, H), state0 (h_prev,), out (h,), each (B, H)."""
    _step(xw, state0[0], W_hh.T, b_hh, out[0])


def activations(cache: RNNCache) -> dict[str, np.ndarray]:
    """(T, B, H) view: h after each step (the RNN has no gates)."""
    return {"h": cache.h[1:]}


def keep_gate(cache: RNNCache) -> None:
    """None: the tanh RNN has no gate that carries its state."""
    return None


def backward(dhs, dstateT, cache: RNNCache):
    """Backpropagate through the window: the forward pass read upside down.

    Args:
        dhs: (T, B, H) dL/dh_t from the layer above (or the decoder).
        dstateT: (dhT,) with dhT (B, H) from the next window (zeros for the last).
    Returns:
        dxw (T, B, H) = dL/dz, (dh0,) with dh0 (B, H), dW_hh (H, H), db_hh (H,).
    """
    h, W_hh = cache
    T, B, H = dhs.shape
    dz_all = np.empty_like(dhs)
    dh = np.array(dstateT[0], dtype=dhs.dtype)  # running dL/dh_t (copy: updated in place)
    for t in reversed(range(T)):
        dz = dz_all[t]
        dh += dhs[t]  # the two paths into h_t: the layer above and step t+1
        # forward: h = tanh(z), derivative from the output: 1 - h^2
        np.multiply(h[t + 1], h[t + 1], out=dz)
        np.subtract(1.0, dz, out=dz)
        dz *= dh
        # forward: z = xw + h_prev W_hh^T + b_hh
        np.matmul(dz, W_hh, out=dh)  # now dL/dh_{t-1} (before adding dhs[t-1])
    dz_flat = dz_all.reshape(T * B, H)
    dW_hh = dz_flat.T @ h[:-1].reshape(T * B, H)  # one GEMM for all steps
    db_hh = dz_flat.sum(axis=0)
    return dz_all, (dh,), dW_hh, db_hh
