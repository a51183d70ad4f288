"""Optional numba kernels outside the cells (ImportError without numba).

Shape legend: N rows (T*B positions), G gate rows, V vocabulary.
"""

from __future__ import annotations

import numba


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
    both fault in fresh pages every window. Measured, 2x512, 32 streams, T = 100:
    1.2 ms against 3.3 ms for take, and 1.4 against 20 ms with a second worker running."""
    N, G = out.shape
    for n in range(N):
        o = out[n]
        r = table[ids[n]]
        for j in range(G):
            o[j] = r[j]

