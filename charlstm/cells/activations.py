"""Small kernels shared by the cells (and the model): in-place activations (no
temporaries in the time loop) and the product x W^T with a GEMV path for one stream."""

from __future__ import annotations

import numpy as np


def sigmoid_(x: np.ndarray) -> None:
    """In-place logistic sigmoid via tanh: sigma(x) = 0.5 + 0.5 tanh(x/2), never overflows."""
    x *= 0.5
    np.tanh(x, out=x)
    x *= 0.5
    x += 0.5


def times_T(x: np.ndarray, W: np.ndarray) -> np.ndarray:
    """x W^T for x (B, D), W (N, D) -> (B, N). One stream (B = 1) is W x as a
    matrix-vector product over W's rows, which BLAS runs ~25% faster than a
    one-row GEMM against the transposed view."""
    if x.shape[0] == 1:
        return (W @ x[0])[None, :]
    return x @ W.T


def times_x_T(W: np.ndarray, x: np.ndarray) -> np.ndarray:
    """W x^T for W (N, D), x (B, D) -> (N, B) C-contiguous: the feature-major twin of
    times_T. BLAS reads x^T as the transposed view it is; one stream is a GEMV. For
    many streams this shape ran ~1.5x faster than x W^T (H = 512, B = 64: 583 against
    870 us on one thread)."""
    if x.shape[0] == 1:
        return (W @ x[0])[:, None]
    return W @ x.T
