"""The CPU wing: every speed trick, apart from the maths a learner reads in cells/.

Layout: settings (the switches, read from CHARLSTM_BACKEND once), blas (NumPy's
BLAS: its facts and, for numba, its GEMM), layout (the fast LSTM's padded loop
columns), workspace (reused per-thread memory), lstm (the fast LSTM, the Cell
protocol on feature-major padded loops), and the numba kernels, imported only on
first use: lstm_kernels (the LSTM's steps and time loops), stack (compiled step-major
inference for LSTM stacks), kernels (gather, scatter-add, optimiser passes).
Every fast variant is proven equal to the reference it replaces (tests/test_fast_*.py).

The model asks implementation(name) for a cell: the wing's own where there is one
and the settings allow, else the reference from cells/.
"""

from __future__ import annotations

from ..cells import Cell, get_cell
from . import lstm
from .settings import Settings, compile_pending, compiled, current, use

__all__ = ["FAST_CELLS", "Settings", "compile_pending", "compiled", "current", "implementation",
           "use"]

FAST_CELLS: dict[str, Cell] = {"lstm": lstm}  # cell name -> its fast twin


def implementation(name: str) -> Cell:
    """The module that runs cell `name`: its fast twin when settings.fast_cells is on,
    else the reference (cells.get_cell, which also rejects an unknown name)."""
    reference = get_cell(name)
    if current().fast_cells and name in FAST_CELLS:
        return FAST_CELLS[name]
    return reference
