"""GRU recurrence: the window forward/backward pair, a cache-free forward and a
single step (the cell interface of cells/__init__.py).

Shape legend: T time steps, B batch (independent streams), H hidden size,
G = 3H stacked gate rows in torch.nn.GRU's order [r | z | n].

The caller computes xw = x W_ih^T + b_ih for the window. This module runs the
sequential part, with all three recurrent products in one GEMM per step:
hw_t = h_{t-1} W_hh^T + b_hh. As in PyTorch, the reset gate multiplies the
recurrent term of the candidate *after* its bias.

Equations (one step; "*" is element-wise):
    r = sigmoid(xw[:, 0H:1H] + hw[:, 0H:1H])      reset gate
    z = sigmoid(xw[:, 1H:2H] + hw[:, 1H:2H])      update gate (1 keeps the state)
    n = tanh(xw[:, 2H:3H] + r*hw[:, 2H:3H])       candidate
    h = (1-z)*n + z*h_prev

forget_bias: z is the GRU's forget gate (h = z*h_prev + (1-z)*n), so init_bias
adds forget_bias to the z block of b_ih, exactly as the LSTM adds it to f: at
init the cell keeps sigma(1) ~ 73% of its state per step instead of 50%, so
gradients and memory survive longer early in training. The parameter layout is
torch's unchanged; pass forget_bias=0 for torch's own initial distribution.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .activations import sigmoid_

GATES = 3  # blocks of H rows in W_ih / W_hh
STATE_NAMES = ("h",)
GATE_NAMES = ("r", "z", "n")
TANH_GATES = ("n",)


class GRUCache(NamedTuple):
    h: np.ndarray  # (T+1, B, H) hidden states; h[0] is h0, h[t+1] the output at t
    gates: np.ndarray  # (T, B, 3H) post-activation gates [r | z | n]
    hn: np.ndarray  # (T, B, H) h_{t-1} W_hn^T + b_hn, the term the reset gate scales
    W_hh: np.ndarray  # (3H, H) recurrent weights


def init_bias(b_ih: np.ndarray, forget_bias: float) -> None:
    """Add forget_bias to the update-gate (z) block of b_ih (3H,), in place."""
    H = b_ih.shape[0] // GATES
    b_ih[H : 2 * H] += forget_bias


def _step(xw, h_prev, W_hh_T, b_hh, a, hn, h_out) -> None:
    """One step: xw (B, 3H), h_prev (B, H), W_hh_T (H, 3H) -> a (B, 3H) becomes the
    gates [r | z | n], hn (B, H) the recurrent candidate term, h_out (B, H) the new h."""
    H = hn.shape[-1]
    np.matmul(h_prev, W_hh_T, out=a)  # hw = h_prev W_hh^T + b_hh, all gates in one GEMM
    a += b_hh
    hn[...] = a[:, 2 * H :]
    rz, n = a[:, : 2 * H], a[:, 2 * H :]
    rz += xw[:, : 2 * H]
    sigmoid_(rz)  # r, z
    r, z = a[:, :H], a[:, H : 2 * H]
    np.multiply(r, hn, out=n)  # n = tanh(xw_n + r*hw_n)
    n += xw[:, 2 * H :]
    np.tanh(n, out=n)
    np.subtract(h_prev, n, out=h_out)  # h = (1-z)*n + z*h_prev = n + z*(h_prev - n)
    h_out *= z
    h_out += n


def forward(xw, state0, W_hh, b_hh):
    """Run the GRU recurrence over a window.

    Args:
        xw: (T, B, 3H) input projection x_t W_ih^T + b_ih for every step.
        state0: (h0,) with h0 (B, H).
        W_hh: (3H, H) recurrent weights.  b_hh: (3H,) recurrent bias.
    Returns:
        hs: (T, B, H) hidden outputs, (hT,) with hT (B, H), and a GRUCache.
    """
    T, B, G = xw.shape
    H = G // GATES
    h = np.empty((T + 1, B, H), dtype=xw.dtype)
    gates = np.empty((T, B, G), dtype=xw.dtype)
    hn = np.empty((T, B, H), dtype=xw.dtype)
    h[0] = state0[0]
    for t in range(T):
        _step(xw[t], h[t], W_hh.T, b_hh, gates[t], hn[t], h[t + 1])
    cache = GRUCache(h=h, gates=gates, hn=hn, W_hh=W_hh)
    return h[1:], (h[T].copy(),), cache


def infer(xw, state0, W_hh, b_hh):
    """forward() without a cache: same arguments, returns hs (T, B, H) and (hT,)."""
    T, B, G = xw.shape
    hs = np.empty((T, B, G // GATES), dtype=xw.dtype)
    a, hn = np.empty((B, G), dtype=xw.dtype), np.empty((B, G // GATES), dtype=xw.dtype)
    h_prev = np.asarray(state0[0], dtype=xw.dtype)
    for t in range(T):
        _step(xw[t], h_prev, W_hh.T, b_hh, a, hn, hs[t])
        h_prev = hs[t]
    return hs, (h_prev.copy(),)


def step(xw, state0, W_hh, b_hh, out) -> None:
    """One step for sampling: xw (B, 3H), state0 (h_prev,), out (h,), each (B, H)."""
    B, G = xw.shape
    a, hn = np.empty((B, G), dtype=xw.dtype), np.empty((B, G // GATES), dtype=xw.dtype)
    _step(xw, state0[0], W_hh.T, b_hh, a, hn, out[0])


def activations(cache: GRUCache) -> dict[str, np.ndarray]:
    """(T, B, H) views: h after each step, then the gates r, z, n."""
    H = cache.hn.shape[-1]
    gates = {name: cache.gates[..., j * H:(j + 1) * H] for j, name in enumerate(GATE_NAMES)}
    return {"h": cache.h[1:], **gates}


def keep_gate(cache: GRUCache) -> np.ndarray:
    """The update gate z (T, B, H) of the window: h = z*h_prev + (1-z)*n."""
    H = cache.hn.shape[-1]
    return cache.gates[..., H : 2 * H]


def _backward_factors(cache: GRUCache, Fr, Fz, Fn) -> None:
    """The parts of the gate gradients that do not depend on the running dL/dh,
    for the whole window at once (each (T, B, H)), from the cached outputs:

        Fn = (1-z) * (1-n^2)        so  da_n = dh * Fn
        Fz = (h_prev-n) * z(1-z)    so  da_z = dh * Fz
        Fr = hw_n * r(1-r)          so  da_r = da_n * Fr

    which leaves the time loop only the products with the running gradient.
    """
    h, gates, hn, _ = cache
    H = hn.shape[-1]
    r, z, n = gates[..., :H], gates[..., H : 2 * H], gates[..., 2 * H :]
    one = gates.dtype.type(1.0)
    np.multiply(n, n, out=Fn)
    np.subtract(one, Fn, out=Fn)  # tanh' = 1-n^2
    Fn *= one - z
    np.subtract(one, z, out=Fz)
    Fz *= z  # sigmoid' = z(1-z)
    Fz *= h[:-1] - n
    np.subtract(one, r, out=Fr)
    Fr *= r  # sigmoid' = r(1-r)
    Fr *= hn


def backward(dhs, dstateT, cache: GRUCache):
    """Backpropagate through the window: the forward pass read upside down.

    Args:
        dhs: (T, B, H) dL/dh_t from the layer above (or the decoder).
        dstateT: (dhT,) with dhT (B, H) from the next window (zeros for the last).
    Returns:
        dxw (T, B, 3H), (dh0,) with dh0 (B, H), dW_hh (3H, H), db_hh (3H,).
    """
    h, gates, hn, W_hh = cache
    T, B, G = gates.shape
    H = G // GATES
    dhw_all = np.empty_like(gates)  # dL/dhw: [da_r | da_z | dhw_n]; factors Fr, Fz first
    dan_all = np.empty_like(hn)  # dL/d(pre-activation of n), the n block of dxw; Fn first
    _backward_factors(cache, dhw_all[..., :H], dhw_all[..., H : 2 * H], dan_all)
    dh = np.array(dstateT[0], dtype=gates.dtype)  # running dL/dh_t (copy: updated in place)
    tmp = np.empty((B, H), dtype=gates.dtype)
    for t in reversed(range(T)):
        r, z = gates[t, :, :H], gates[t, :, H : 2 * H]
        dhw = dhw_all[t]
        dar, daz, dhn = dhw[:, :H], dhw[:, H : 2 * H], dhw[:, 2 * H :]
        dan = dan_all[t]
        dh += dhs[t]  # the two paths into h_t: the layer above and step t+1
        # forward: h = (1-z)*n + z*h_prev, and n = tanh(xw_n + r*hw_n)
        dan *= dh  # da_n = dh*(1-z)*(1-n^2)
        daz *= dh  # da_z = dh*(h_prev-n)*z(1-z)
        dh *= z  # the direct path into h_prev; the gate paths are added below
        # forward: the r*hw_n inside n
        dar *= dan  # da_r = da_n*hw_n*r(1-r)
        np.multiply(dan, r, out=dhn)  # dhw_n = da_n*r
        # forward: hw = h_prev W_hh^T + b_hh
        np.matmul(dhw, W_hh, out=tmp)
        dh += tmp  # now dL/dh_{t-1} (before adding dhs[t-1])
    dhw_flat = dhw_all.reshape(T * B, G)
    dW_hh = dhw_flat.T @ h[:-1].reshape(T * B, H)  # one GEMM for all steps
    db_hh = dhw_flat.sum(axis=0)
    dxw = dhw_all  # r and z blocks are shared: d(xw) = d(hw) there
    dxw[:, :, 2 * H :] = dan_all  # the n block differs: xw_n is not scaled by r
    return dxw, (dh,), dW_hh, db_hh
