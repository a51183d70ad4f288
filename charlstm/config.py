"""Typed, frozen configuration for the model.

Every checkpoint stores the whole config, so a model can always be rebuilt
from its file alone. CLI defaults are read from these dataclasses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

CELL_TYPES = ("lstm", "gru", "rnn")


@dataclass(frozen=True)
class ModelConfig:
    # Number of distinct characters; the one-hot input width and the softmax width.
    vocab_size: int
    # Width of each recurrent layer's state; cost grows as H^2 per character.
    hidden_size: int = 128
    # Stacked recurrent layers; 2-3 is where char-rnn found the best loss per parameter.
    num_layers: int = 2
    # Inverted-dropout rate on the outputs of every layer but the last (as torch.nn.LSTM).
    dropout: float = 0.0
    # Added to the forget block of bias_ih at init so the cell remembers by default.
    forget_bias: float = 1.0
    # Recurrent cell: "lstm" (default), "gru" or "rnn" (tanh); parameter layout follows torch.
    cell: str = "lstm"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.cell not in CELL_TYPES:
            raise ValueError(f"cell must be one of {', '.join(CELL_TYPES)}, got {self.cell!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(sorted(unknown))}")
        return cls(**d)
