"""numba kernels outside the LSTM: the layer-0 gather and its scatter-add gradient
(layers), and the optimiser's passes over flat weight chunks (optim). Imported on
first use through fast.settings.compiled (ImportError without numba).

Shape legend: N rows (T*B positions), G gate rows, V vocabulary.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True, error_model="numpy")
def scatter_add_rows(out, ids, rows):
    """out[ids[n]] += rows[n] for n in range(N); out (V, G), ids (N,), rows (N, G).
    One pass over rows (NumPy's sort + reduceat makes three and a gathered copy)."""
    N, G = rows.shape
    for n in range(N):
        o = out[ids[n]]
        r = rows[n]
        for j in range(G):
            o[j] += r[j]


@numba.njit(nogil=True, cache=True)
def gather_rows(out, table, ids):
    """out[n] = table[ids[n]] for n in range(N); out (N, G), table (V, G), ids (N,).
    One pass into `out`: NumPy's take(..., out=) first fills a temporary of the whole
    window (it buffers `out` in its default mode) and fancy indexing makes a new array;
    both fault in fresh pages every window (docs/performance.md)."""
    N, G = out.shape
    for n in range(N):
        o = out[n]
        r = table[ids[n]]
        for j in range(G):
            o[j] = r[j]



# Element-wise passes over the weights (optim): one loop over flat (N,) arrays where
# NumPy makes one pass per operation. Each does the same IEEE operations, in the same
# order and precision, as the NumPy code it replaces (the scalars come in the arrays'
# dtype), so both give the same bits; tests prove it. error_model="numpy" (no
# ZeroDivisionError branch in the loop) is what lets LLVM vectorize them.

@numba.njit(nogil=True, cache=True, error_model="numpy")
def adam_update(p, g, m, v, decay, b1, c1, b2, c2, root_bias2, eps, step):
    """optim.Adam's update of one flat chunk, in place (p, m, v; all (N,)):
    p *= decay (decoupled weight decay; 1 for none)
    m = b1*m + c1*g;  v = b2*v + c2*g*g;  p -= step * m / (sqrt(v)*root_bias2 + eps)."""
    for k in range(p.shape[0]):  # (p * 1 is p exactly, so decay = 1 needs no branch)
        gk = g[k]
        mk = m[k] * b1 + gk * c1
        vk = v[k] * b2 + (gk * gk) * c2
        m[k] = mk
        v[k] = vk
        p[k] = p[k] * decay - (mk / (np.sqrt(vk) * root_bias2 + eps)) * step


@numba.njit(nogil=True, cache=True, error_model="numpy")
def sum_squares(a):
    """sum(a*a) of a flat (N,) chunk, accumulated in float64, in four running sums."""
    s0 = s1 = s2 = s3 = 0.0
    n = a.shape[0] - a.shape[0] % 4
    for k in range(0, n, 4):
        s0 += np.float64(a[k]) * np.float64(a[k])
        s1 += np.float64(a[k + 1]) * np.float64(a[k + 1])
        s2 += np.float64(a[k + 2]) * np.float64(a[k + 2])
        s3 += np.float64(a[k + 3]) * np.float64(a[k + 3])
    for k in range(n, a.shape[0]):
        s0 += np.float64(a[k]) * np.float64(a[k])
    return (s0 + s1) + (s2 + s3)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def scale_(a, s):
    """a *= s for a flat (N,) chunk, in place."""
    for k in range(a.shape[0]):
        a[k] *= s


@numba.njit(nogil=True, cache=True, error_model="numpy")
def average_update(a, p, w):
    """optim.ema_update of one flat chunk: a += w * (p - a), in place."""
    for k in range(a.shape[0]):
        a[k] += w * (p[k] - a[k])
