"""Every registered cell implements the whole cell interface (charlstm.cells.Cell)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from charlstm.cells import CELLS, Cell

MEMBERS = [name for name in vars(Cell) if not name.startswith("_")] + list(
    Cell.__annotations__)


@pytest.mark.parametrize("name", CELLS)
def test_cell_implements_the_interface(name):
    cell = CELLS[name]
    missing = [m for m in MEMBERS if not hasattr(cell, m)]
    assert not missing, f"{name} lacks {missing}"
    for m in MEMBERS:
        if callable(getattr(Cell, m, None)):
            want = list(inspect.signature(getattr(Cell, m)).parameters)[1:]  # drop self
            assert list(inspect.signature(getattr(cell, m)).parameters) == want, (name, m)
    assert cell.STATE_NAMES[0] == "h" and cell.GATES >= 1


@pytest.mark.parametrize("name", CELLS)
def test_keep_gate_reads_the_cache(name):
    cell, rng = CELLS[name], np.random.default_rng(0)
    T, B, H = 3, 2, 4
    xw = rng.normal(size=(T, B, cell.GATES * H))
    state0 = tuple(rng.normal(size=(B, H)) for _ in cell.STATE_NAMES)
    W_hh, b_hh = rng.normal(size=(cell.GATES * H, H)), rng.normal(size=cell.GATES * H)
    _, _, cache = cell.forward(xw, state0, W_hh, b_hh)
    gate = cell.keep_gate(cache)
    if gate is not None:  # a gate after a sigmoid: strictly between 0 and 1
        assert gate.shape == (T, B, H) and np.all((gate > 0) & (gate < 1))
