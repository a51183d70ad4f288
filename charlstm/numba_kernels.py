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
