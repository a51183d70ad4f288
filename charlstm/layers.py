"""Stateless building blocks around the recurrence: input projection,
dropout, linear decoder, softmax cross-entropy. Each is a forward/backward pair.

Shape legend: T time, B batch, V vocabulary, H hidden, D input width, G gate rows.
"""

from __future__ import annotations

import math

import numpy as np

from . import fast
from .fast import workspace

LN2 = math.log(2.0)  # nats per bit: bits/char = (nats/char) / LN2


def is_ids(x: np.ndarray) -> bool:
    """True when x holds character ids (one-hot input) rather than dense features."""
    return x.dtype.kind in "iu"


def _matmul_rows(x: np.ndarray, W: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """x @ W for x (T, B, D) and W (D, N) -> (T, B, N) (into `out` if given), as ONE
    GEMM over all T*B rows: NumPy runs a 3-D @ 2-D product as T separate (B, D) GEMMs,
    measured 1.6-2.6x slower at B = 32 (each call re-reads W and runs a thin kernel)."""
    shape = (*x.shape[:-1], W.shape[-1])
    if out is None:
        return (x.reshape(-1, x.shape[-1]) @ W).reshape(shape)
    np.matmul(x.reshape(-1, x.shape[-1]), W, out=out.reshape(-1, W.shape[-1]))
    return out


def input_projection_forward(x, W_ih, b_ih):
    """xw = x W_ih^T + b_ih for every step of the window at once.

    Args:
        x: (T, B) int character ids, or (T, B, D) float features.
        W_ih: (G, V) or (G, D).  b_ih: (G,).
    Returns:
        xw: (T, B, G).
    For ids, a one-hot x times W_ih^T just selects columns of W_ih, so it is
    done as a gather (no one-hot matrix is ever built).
    """
    # the (T, B, G) result is tens of MB: it goes to workspace memory (see workspace)
    out = workspace.empty(x.shape[:2] + (W_ih.shape[0],), W_ih.dtype)
    if is_ids(x):  # gather rows of the (V, G) table W_ih^T + b_ih: one pass
        table = np.add(W_ih.T, b_ih, order="C")
        kernels = fast.compiled("kernels")  # a one-pass, GIL-free gather with numba
        if kernels is None or not x.size or x.min() < 0 or x.max() >= table.shape[0]:
            return table[x]  # NumPy's indexing (and its IndexError for a bad id)
        kernels.gather_rows(out.reshape(-1, out.shape[-1]), table, x.reshape(-1))
        return out
    _matmul_rows(x, W_ih.T, out)  # features: one GEMM for the whole window
    out += b_ih
    return out


def input_projection_backward(dxw, x, W_ih):
    """Gradients of input_projection_forward.

    Args:
        dxw: (T, B, G).  x and W_ih as in the forward.
    Returns:
        dx (T, B, D) or None for ids, dW_ih like W_ih, db_ih (G,).
    """
    T, B, G = dxw.shape
    dxw_flat = dxw.reshape(T * B, G)
    db_ih = dxw_flat.sum(axis=0)
    kernels = fast.compiled("kernels")  # a one-pass scatter-add with numba
    if is_ids(x) and kernels is not None:
        dW_ih_T = np.zeros((W_ih.shape[1], G), dtype=dxw.dtype)  # (V, G): rows are ids
        kernels.scatter_add_rows(dW_ih_T, x.reshape(-1), dxw_flat)
        return None, np.ascontiguousarray(dW_ih_T.T), db_ih
    if is_ids(x):
        # Scatter-add rows of dxw into the columns they were gathered from:
        # sort positions by id, then sum each run of equal ids in one reduceat.
        ids = x.reshape(-1)
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
        dW_ih = np.zeros_like(W_ih)
        dW_ih[:, sorted_ids[starts]] = np.add.reduceat(dxw_flat[order], starts, axis=0).T
        return None, dW_ih, db_ih
    D = x.shape[-1]
    dW_ih = dxw_flat.T @ x.reshape(T * B, D)
    dx = _matmul_rows(dxw, W_ih)
    return dx, dW_ih, db_ih


def dropout_mask(shape, p: float, rng: np.random.Generator, dtype) -> np.ndarray:
    """Inverted-dropout mask: 0 with probability p, else 1/(1-p), so E[mask] = 1."""
    keep = rng.random(shape) >= p
    return keep.astype(dtype) / np.asarray(1.0 - p, dtype=dtype)


def linear_forward(h, W, b):
    """y = h W^T + b.  h: (T, B, H), W: (V, H), b: (V,) -> y: (T, B, V)."""
    y = _matmul_rows(h, W.T)
    y += b
    return y


def linear_backward(dy, h, W):
    """dy: (T, B, V) -> dh (T, B, H), dW (V, H), db (V,)."""
    T, B, V = dy.shape
    dy_flat = dy.reshape(T * B, V)
    dW = dy_flat.T @ h.reshape(T * B, -1)
    db = dy_flat.sum(axis=0)
    dh = _matmul_rows(dy, W)
    return dh, dW, db


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax over the last axis."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax_cross_entropy(logits, y, count: int | None = None):
    """Mean cross-entropy (nats) over all T*B positions, and its gradient.

    Args:
        logits: (T, B, V).  y: (T, B) int targets.
        count: the number of positions the mean is over (default T*B); a slice of
            a batch's streams passes the whole batch's count, so that the slices'
            losses and gradients sum to the batch's.
    Returns:
        loss (float), dlogits (T, B, V) = (softmax - onehot(y)) / count.
    """
    T, B, V = logits.shape
    N = T * B
    shifted = logits - logits.max(axis=-1, keepdims=True)
    probs = np.exp(shifted)
    sums = probs.sum(axis=-1, keepdims=True)
    rows = np.arange(N)
    target = y.reshape(N)
    # -log softmax(logits)[y] = log(sum(exp(shifted))) - shifted[y], never log(0)
    nll = np.log(sums.reshape(N)) - shifted.reshape(N, V)[rows, target]
    loss = nll.mean(dtype=np.float64) if count is None else nll.sum(dtype=np.float64) / count
    # d(-log p_y)/dlogits = p - onehot(y), averaged over the positions
    probs /= sums
    probs.reshape(N, V)[rows, target] -= 1.0
    probs /= N if count is None else count
    return float(loss), probs
