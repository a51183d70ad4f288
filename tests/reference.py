"""Naive language models for every cell, written independently of charlstm's fused code.

One step function per cell, with per-gate matrices split out of torch's stacked
layout, one time step and one batch element at a time, textbook formulas in
float64: slow and obvious, an oracle for the forward pass. A new cell adds its
step function to STEPS.
"""

from __future__ import annotations

import math

import numpy as np


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def lstm_step(x, state, Wi, Wh, bi, bh):
    """One LSTM step for one stream; state (h, c); Wi etc. are dicts over i, f, g, o."""
    h, c = state
    pre = {n: Wi[n] @ x + bi[n] + Wh[n] @ h + bh[n] for n in "ifgo"}
    i, f, o = sigmoid(pre["i"]), sigmoid(pre["f"]), sigmoid(pre["o"])
    g = np.tanh(pre["g"])
    c = f * c + i * g
    return o * np.tanh(c), c


def gru_step(x, state, Wi, Wh, bi, bh):
    """One GRU step for one stream; state (h,); Wi etc. are dicts over r, z, n."""
    (h,) = state
    r = sigmoid(Wi["r"] @ x + bi["r"] + Wh["r"] @ h + bh["r"])
    z = sigmoid(Wi["z"] @ x + bi["z"] + Wh["z"] @ h + bh["z"])
    n = np.tanh(Wi["n"] @ x + bi["n"] + r * (Wh["n"] @ h + bh["n"]))
    return ((1.0 - z) * n + z * h,)


def rnn_step(x, state, Wi, Wh, bi, bh):
    """One tanh-RNN step for one stream; state (h,); a single 'gate' named h."""
    (h,) = state
    return (np.tanh(Wi["h"] @ x + bi["h"] + Wh["h"] @ h + bh["h"]),)


# cell -> (step function, gate names in torch's stacking order)
STEPS = {"lstm": (lstm_step, "ifgo"), "gru": (gru_step, "rzn"), "rnn": (rnn_step, "h")}


def naive_lm_forward(params, cell, x, state, num_layers, masks=None, weight_masks=None):
    """params: charlstm names; x: (T, B) ids; state: tuple of (L, B, H).
    masks: L-1 or L output masks (T, B, H) or (1, B, H) (locked: the same every step), or None.
    weight_masks: name -> mask; DropConnect as explicitly masked W_hh gate blocks, and
    character dropout as the one-hot input vector times the (V,) mask, not as masked weights.
    Returns logits (T, B, V) and the final state, a tuple of (L, B, H)."""
    step, names = STEPS[cell]
    T, B = x.shape
    V, H = params["decoder.weight"].shape
    weight_masks = weight_masks or {}
    logits = np.zeros((T, B, V))
    final = tuple(np.zeros((num_layers, B, H)) for _ in state)
    keep_char = weight_masks.get(f"{cell}.weight_ih_l0", np.ones((1, V)))[0]

    def split(W):  # torch stacks the gate blocks as rows
        return {name: W[k * H:(k + 1) * H] for k, name in enumerate(names)}

    def mask_at(k, t, b):  # a locked mask has one row, used at every step
        if masks is None or k >= len(masks):
            return 1.0
        return masks[k][min(t, len(masks[k]) - 1), b]

    for b in range(B):
        seq = [np.eye(V)[x[t, b]] * keep_char for t in range(T)]  # explicit one-hot vectors
        for k in range(num_layers):
            Wi, bi, bh = (split(params[f"{cell}.{w}_l{k}"])
                          for w in ("weight_ih", "bias_ih", "bias_hh"))
            W_hh = params[f"{cell}.weight_hh_l{k}"]
            M = weight_masks.get(f"{cell}.weight_hh_l{k}", np.ones_like(W_hh))
            Wh = split(np.array([[W_hh[r, c] * M[r, c] for c in range(H)]
                                 for r in range(len(W_hh))]))
            s = tuple(a[k, b].copy() for a in state)
            out = []
            for t in range(T):
                s = step(seq[t], s, Wi, Wh, bi, bh)
                out.append(s[0] * mask_at(k, t, b))
            for whole, part in zip(final, s):
                whole[k, b] = part
            seq = out
        for t in range(T):
            logits[t, b] = params["decoder.weight"] @ seq[t] + params["decoder.bias"]
    return logits, final


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


def naive_activation_penalty(h, h0, ar, tar):
    """AWD-LSTM's AR + TAR, one element at a time: h (T, B, H) the top layer's output,
    h0 (B, H) its value before the window (the h[-1] of the first difference)."""
    T, B, H = h.shape
    squares, changes = 0.0, 0.0
    for t in range(T):
        for b in range(B):
            for j in range(H):
                before = h0[b, j] if t == 0 else h[t - 1, b, j]
                squares += h[t, b, j] ** 2
                changes += (h[t, b, j] - before) ** 2
    return ar * squares / (T * B * H) + tar * changes / (T * B * H)
