"""A naive LSTM language model, written independently of charlstm's fused code.

Per-gate matrices, one time step and one batch element at a time, plain
formulas, float64: slow and obvious, used only as an oracle for the forward pass.
"""

from __future__ import annotations

import math

import numpy as np


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def split_gates(W, H):
    """PyTorch stacks the gates as rows [i; f; g; o]."""
    return {name: W[k * H:(k + 1) * H] for k, name in enumerate("ifgo")}


def naive_lm_forward(params, x, h0, c0, num_layers, masks=None):
    """params: charlstm names; x: (T, B) ids; h0, c0: (L, B, H).
    Returns logits (T, B, V), hT, cT (L, B, H)."""
    T, B = x.shape
    V, H = params["decoder.weight"].shape
    logits = np.zeros((T, B, V))
    hT = np.zeros((num_layers, B, H))
    cT = np.zeros((num_layers, B, H))
    for b in range(B):
        # Layer input for layer 0: a one-hot vector per step, built explicitly here.
        seq = [np.eye(V)[x[t, b]] for t in range(T)]
        for k in range(num_layers):
            Wi = split_gates(params[f"lstm.weight_ih_l{k}"], H)
            Wh = split_gates(params[f"lstm.weight_hh_l{k}"], H)
            bi = split_gates(params[f"lstm.bias_ih_l{k}"], H)
            bh = split_gates(params[f"lstm.bias_hh_l{k}"], H)
            h, c = h0[k, b].copy(), c0[k, b].copy()
            out = []
            for t in range(T):
                pre = {n: Wi[n] @ seq[t] + bi[n] + Wh[n] @ h + bh[n] for n in "ifgo"}
                i, f, o = sigmoid(pre["i"]), sigmoid(pre["f"]), sigmoid(pre["o"])
                g = np.tanh(pre["g"])
                c = f * c + i * g
                h = o * np.tanh(c)
                drop = masks[k][t, b] if masks is not None and k < num_layers - 1 else 1.0
                out.append(h * drop)
            hT[k, b], cT[k, b] = h, c
            seq = out
        for t in range(T):
            logits[t, b] = params["decoder.weight"] @ seq[t] + params["decoder.bias"]
    return logits, hT, cT


def naive_cross_entropy(logits, y):
    """Mean over positions of -log softmax(logits)[y], one position at a time."""
    T, B, _ = logits.shape
    total = 0.0
    for t in range(T):
        for b in range(B):
            row = logits[t, b]
            m = row.max()
            total += m + math.log(np.exp(row - m).sum()) - row[y[t, b]]
    return total / (T * B)
