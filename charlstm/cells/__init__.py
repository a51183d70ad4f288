"""Recurrent cells: the interface every cell implements, and the registry.

Shape legend: T time steps, B batch (streams), H hidden size, G = GATES*H stacked
gate rows of W_ih / W_hh (in torch.nn's order for that cell).

A cell is a module (lstm, gru, rnn) with the members of `Cell` below. The model
computes the input projection xw = x W_ih^T + b_ih for the whole window itself (one
gather for ids, one GEMM for the layer below), so a cell runs only the part that is
truly sequential. The model, sampling, gradflow and interop use these members and
CELLS, nothing else of a cell.

The cells here are the references, the maths as derived. A fast twin of a cell
(charlstm.fast: the LSTM's) implements the same members and may offer more, which
the model and engine use when present: forward_ids(ids, W_ih, b_ih, state0, W_hh,
b_hh) and infer_ids(...), forward() and infer() for one-hot input ids (T, B) with
the input projection done straight into its own layout (layer 0); and
stack_inference(dtype), compiled step-major evaluation and sampling for a stack.

Adding a cell: write cells/<name>.py implementing `Cell`, add it to CELLS, and give it
its torch twin (interop/torch.py RECURRENT) and ONNX operator (interop/onnx.py
ONNX_OPS, GATE_ORDER); the parametrised proofs in tests/ then cover it once its naive
reference is in tests/reference.py.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from . import gru, lstm, rnn


class Cell(Protocol):
    """What a cell module provides (checked for every registered cell by the tests)."""

    GATES: int  # blocks of H rows in W_ih / W_hh (4 LSTM, 3 GRU, 1 RNN)
    STATE_NAMES: tuple[str, ...]  # the per-layer state arrays, "h" first: ("h", "c"), ("h",)
    GATE_NAMES: tuple[str, ...]  # the cached post-activation gates, in block order (RNN: none)
    TANH_GATES: tuple[str, ...]  # those of GATE_NAMES squashed by tanh, not a sigmoid

    def init_bias(self, b_ih: np.ndarray, forget_bias: float) -> None:
        """Bias b_ih (G,) in place at init so the cell keeps its state longer (or nothing)."""

    def forward(self, xw: np.ndarray, state0: tuple, W_hh: np.ndarray,
                b_hh: np.ndarray) -> tuple[np.ndarray, tuple, Any]:
        """Window forward: xw (T, B, G), state0 tuple of (B, H), W_hh (G, H), b_hh (G,)
        -> hs (T, B, H), final state tuple of (B, H), cache (a NamedTuple)."""

    def backward(self, dhs: np.ndarray, dstateT: tuple, cache: Any) -> tuple:
        """dhs (T, B, H), dstateT tuple of (B, H) -> dxw (T, B, G), dstate0 tuple of
        (B, H), dW_hh (G, H), db_hh (G,)."""

    def infer(self, xw: np.ndarray, state0: tuple, W_hh: np.ndarray,
              b_hh: np.ndarray) -> tuple[np.ndarray, tuple]:
        """forward() keeping no cache (evaluation): -> hs (T, B, H), final state."""

    def step(self, xw: np.ndarray, state0: tuple, W_hh: np.ndarray, b_hh: np.ndarray,
             out: tuple) -> None:
        """One step for sampling: xw (B, G) (may be overwritten), state0 tuple of (B, H);
        writes the new state into `out`, a tuple of (B, H) arrays (out[0] is h)."""

    def keep_gate(self, cache: Any) -> np.ndarray | None:
        """(T, B, H) view of the cached gate that carries the state from step to step
        (LSTM f, GRU z), or None for a cell without one (the tanh RNN)."""

    def activations(self, cache: Any) -> dict[str, np.ndarray]:
        """(T, B, H) views of the window's states after each step and its gates, by
        name, STATE_NAMES then GATE_NAMES (what charlstm.activity reads)."""


CELLS: dict[str, Cell] = {"lstm": lstm, "gru": gru, "rnn": rnn}


def get_cell(name: str) -> Cell:
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"unknown cell {name!r}; choose from {', '.join(CELLS)}") from None
