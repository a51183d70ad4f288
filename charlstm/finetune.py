"""Fine-tuning: `charlstm train --init-from RUN|CHECKPOINT` starts a new run from trained
weights (char-rnn's -init_from, nanoGPT's init_from='resume' on new data).

The new run keeps the model's shape and vocabulary (every character of the new text
must be in it), and starts a fresh optimizer, learning-rate schedule, step count and
data cursor: only the weights carry over. Dropout may change (it only acts in training).
"""

from __future__ import annotations

from .checkpoint import Checkpoint, load_checkpoint
from .config import DROPOUTS
from .errors import UserError
from .runs import resolve_checkpoint

# Settings that fix the weights' shapes or their initialisation: taken from the model.
MODEL_KEYS = ("cell", "hidden_size", "num_layers", "forget_bias")


def load_init(spec: str) -> Checkpoint:
    """The checkpoint of --init-from: a run directory (its best, else last) or a file."""
    return load_checkpoint(resolve_checkpoint(spec))


def init_settings(settings: dict, init: Checkpoint) -> dict:
    """settings (from --config and flags) with the model's shape and dropouts filled in
    from init; a shape setting given that differs from the model's is a UserError."""
    model = init.config
    for key in MODEL_KEYS:
        if key in settings and settings[key] != getattr(model, key):
            flag = "--" + key.replace("_", "-")
            raise UserError(f"{flag} {settings[key]} does not match the --init-from model "
                            f"({key} {getattr(model, key)}): fine-tuning keeps the model's "
                            f"shape; drop {flag}, or train a new model without --init-from")
    return {**{name: getattr(model, name) for name in DROPOUTS}, **settings,
            **{key: getattr(model, key) for key in MODEL_KEYS}}
