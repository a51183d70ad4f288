"""The PyTorch twin of a charlstm model: load an exported state dict in three lines.

    import safetensors.torch
    from charlstm.interop.torch import CharRNN
    model = CharRNN.from_state_dict(safetensors.torch.load_file("model.safetensors"))

Shape legend: T time, B batch, V vocab, H hidden, L layers.

CharRNN is one-hot input -> nn.LSTM / nn.GRU / nn.RNN(tanh) (V, H, L) -> nn.Linear(H, V).
The recurrent submodule is an attribute named after the cell (`self.lstm`,
`self.gru`, `self.rnn`) and the linear one is `self.decoder`, so the module's
state_dict keys are exactly charlstm's parameter names and load with strict=True.
torch is an optional extra (`pip install 'charlstm[torch]'`); nothing in the core
imports this module.
"""

from __future__ import annotations

import numpy as np

from ..cells import get_cell
from .state_dict import infer_config, require_torch

torch = require_torch()  # a one-line UserError, not a bare ImportError, if missing
nn = torch.nn

RECURRENT = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}  # nn.RNN's default is tanh


class CharRNN(nn.Module):
    """ids (T, B) long -> logits (T, B, V), with torch's own state convention:
    (h, c) for LSTM and h alone for GRU/RNN, each (L, B, H); None means zeros."""

    def __init__(self, vocab_size: int, hidden_size: int, num_layers: int = 2,
                 cell: str = "lstm", dropout: float = 0.0):
        super().__init__()
        if cell not in RECURRENT:
            raise ValueError(f"cell must be one of {', '.join(RECURRENT)}, got {cell!r}")
        self.cell = cell
        self.vocab_size = vocab_size
        setattr(self, cell, RECURRENT[cell](vocab_size, hidden_size, num_layers,
                                            dropout=dropout))
        self.decoder = nn.Linear(hidden_size, vocab_size)

    @property
    def recurrent(self) -> nn.Module:
        return getattr(self, self.cell)

    def forward(self, ids, state=None):
        """ids: (T, B) long. Returns logits (T, B, V) and the final state."""
        # One-hot floats: nn.LSTM/GRU/RNN take dense input and apply W_ih themselves.
        x = nn.functional.one_hot(ids, self.vocab_size).to(self.decoder.weight.dtype)
        out, state = self.recurrent(x, state)
        return self.decoder(out), state

    @classmethod
    def from_state_dict(cls, state_dict: dict, dropout: float = 0.0) -> CharRNN:
        """The module that `state_dict` (tensors or arrays) describes, holding its values
        in their dtype; wrong names or shapes get charlstm's one-line UserError."""
        config = infer_config({k: tuple(v.shape) for k, v in state_dict.items()})
        tensors = {k: torch.as_tensor(np.asarray(v)) if isinstance(v, np.ndarray) else v
                   for k, v in state_dict.items()}
        model = cls(config.vocab_size, config.hidden_size, config.num_layers, config.cell,
                    dropout).to(tensors["decoder.weight"].dtype)
        model.load_state_dict(tensors, strict=True)
        return model


def _torch_state_is_tuple(cell: str) -> bool:
    """torch passes a tuple for a cell of several state arrays ((h, c) for nn.LSTM), the
    bare tensor for a cell of one (h): the cell's STATE_NAMES say which, not its name."""
    return len(get_cell(cell).STATE_NAMES) > 1


def state_to_torch(state: tuple, cell: str):
    """charlstm's state (a tuple of (L, B, H) arrays, one per STATE_NAMES) -> torch's:
    a tuple such as (h, c), or h alone."""
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(s)) for s in state)
    return tensors if _torch_state_is_tuple(cell) else tensors[0]


def state_from_torch(state, cell: str) -> tuple:
    """torch's state, a tuple such as (h, c) or h alone -> charlstm's tuple of (L, B, H)
    arrays."""
    tensors = state if _torch_state_is_tuple(cell) else (state,)
    return tuple(t.detach().cpu().numpy() for t in tensors)
