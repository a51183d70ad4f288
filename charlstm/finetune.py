"""Fine-tuning: `charlstm train --init-from RUN|CHECKPOINT` starts a new run from trained
weights (char-rnn's -init_from, nanoGPT's init_from='resume' on new data).

The new run keeps the model's shape and vocabulary, and starts a fresh optimizer,
learning-rate schedule, step count and data cursor: only the weights carry over.
Inherited from the source model: its shape (cell, layers, width, forget bias) and, unless
given, its dropout rates (training-only, so free to change). Not inherited: the
optimiser, weight decay, EMA, AR/TAR and every other setting, which are this run's own
(its flags, --config, --preset, or the defaults), as in a new run.

A character of the new text outside the vocabulary is an error, or with --unknown skip
is left out, or with --extend-vocab gets a row of its own (extend_params).
"""

from __future__ import annotations

import numpy as np

from . import model
from .checkpoint import Checkpoint, load_checkpoint
from .config import DROPOUTS, ModelConfig
from .errors import UserError
from .runs import resolve_checkpoint
from .text import Vocab

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


def extended_vocab(init: Checkpoint, text: str) -> Vocab:
    """init's vocabulary, then the characters of text it lacks, sorted: every old
    character keeps its id, so its weights keep their meaning."""
    vocab = Vocab(init.vocab)
    return Vocab(list(init.vocab) + sorted(set(vocab.unknown(text))))


def extend_params(params: dict, config: ModelConfig, seed: int, dtype) -> dict:
    """params of a model with fewer characters, grown to config.vocab_size: the new
    input columns of weight_ih_l0 and the new rows of decoder.weight and decoder.bias
    are those a fresh model of config draws from seed (model.init_params); every old
    entry is kept as it is. So at step 0 the old characters' logits are unchanged
    (the new columns are read only for a new input character, the old decoder rows are
    the same), and the model is an ordinary one of the larger shape, whose gradients
    the usual backward pass computes."""
    fresh = model.init_params(config, np.random.default_rng(seed), dtype)
    grown = {}
    for name, new in fresh.items():
        old = np.asarray(params[name], dtype=dtype)
        new[tuple(slice(0, n) for n in old.shape)] = old
        grown[name] = new
    return grown


def describe_inherited(model_cfg: ModelConfig, added: int, skipped: int) -> str:
    """The header's line on what a fine-tuned run takes from its source model (whose
    shape model_cfg has, with `added` more characters)."""
    vocab = f"vocabulary {model_cfg.vocab_size - added}"
    if added:
        vocab += f" + {added} new character{'s' * (added > 1)} (--extend-vocab)"
    if skipped:
        vocab += f", {skipped:,} character{'s' * (skipped > 1)} of the text left out " \
                 "(--unknown skip)"
    return (f"inherited: weights, {model_cfg.cell.upper()} {model_cfg.num_layers} x "
            f"{model_cfg.hidden_size}, {vocab}, dropout rates unless given; this run's "
            "own: optimiser, lr, schedule, weight decay, EMA, AR/TAR")
