"""Naive GRU and tanh-RNN language models, written independently of the fused cells.

Per-gate matrices split out of torch's stacked layout, one time step and one
batch element at a time, plain textbook formulas in float64: slow and obvious,
an oracle for the forward pass of charlstm.cells.gru and charlstm.cells.rnn.
"""

from __future__ import annotations

import numpy as np


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def gru_step(x, h, Wi, Wh, bi, bh):
    """One GRU step for one stream; Wi etc. are dicts over the gate names r, z, n."""
    r = sigmoid(Wi["r"] @ x + bi["r"] + Wh["r"] @ h + bh["r"])
    z = sigmoid(Wi["z"] @ x + bi["z"] + Wh["z"] @ h + bh["z"])
    n = np.tanh(Wi["n"] @ x + bi["n"] + r * (Wh["n"] @ h + bh["n"]))
    return (1.0 - z) * n + z * h


def rnn_step(x, h, Wi, Wh, bi, bh):
    """One tanh-RNN step for one stream (a single 'gate' named h)."""
    return np.tanh(Wi["h"] @ x + bi["h"] + Wh["h"] @ h + bh["h"])


STEPS = {"gru": (gru_step, "rzn"), "rnn": (rnn_step, "h")}


def naive_lm_forward(params, cell, x, h0, num_layers, masks=None):
    """params: charlstm names; x: (T, B) ids; h0: (L, B, H).
    Returns logits (T, B, V) and hT (L, B, H)."""
    step, names = STEPS[cell]
    T, B = x.shape
    V, H = params["decoder.weight"].shape
    logits = np.zeros((T, B, V))
    hT = np.zeros((num_layers, B, H))

    def split(W):  # torch stacks the gate blocks as rows
        return {name: W[k * H:(k + 1) * H] for k, name in enumerate(names)}

    for b in range(B):
        seq = [np.eye(V)[x[t, b]] for t in range(T)]  # explicit one-hot vectors
        for k in range(num_layers):
            Wi, Wh, bi, bh = (split(params[f"{cell}.{w}_l{k}"])
                              for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            h = h0[k, b].copy()
            out = []
            for t in range(T):
                h = step(seq[t], h, Wi, Wh, bi, bh)
                drop = masks[k][t, b] if masks is not None and k < num_layers - 1 else 1.0
                out.append(h * drop)
            hT[k, b] = h
            seq = out
        for t in range(T):
            logits[t, b] = params["decoder.weight"] @ seq[t] + params["decoder.bias"]
    return logits, hT
