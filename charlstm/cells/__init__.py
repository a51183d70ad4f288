"""Recurrent cells. Each module exposes the same small interface:

    GATES        number of H-row blocks in W_ih / W_hh (4 for LSTM)
    STATE_NAMES  names of the per-layer state arrays, e.g. ("h", "c")
    init_bias(b_ih, forget_bias)             in-place bias initialisation
    forward(xw, state0, W_hh, b_hh)          -> hs, stateT, cache
    backward(dhs, dstateT, cache)            -> dxw, dstate0, dW_hh, db_hh

so the model stacks any of them the same way. Two optional extras, used when
present (the LSTM has both; the model falls back without them):

    infer(xw, state0, W_hh, b_hh, overwrite_xw=False) -> hs, stateT
                 forward without a cache, for evaluation and sampling
    ACCEPTS_OVERWRITE_XW = True
                 forward/infer take overwrite_xw=True and may reuse xw's memory
"""

from __future__ import annotations

from types import ModuleType

from . import gru, lstm, rnn

CELLS: dict[str, ModuleType] = {"lstm": lstm, "gru": gru, "rnn": rnn}


def get_cell(name: str) -> ModuleType:
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"unknown cell {name!r}; choose from {', '.join(CELLS)}") from None
