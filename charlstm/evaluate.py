"""Evaluation: mean cross-entropy of a model over a whole text, forward only.

Shape legend: T window length, B streams, V vocab.

Used by `charlstm eval`, by the trainer's validation passes and by the benchmarks,
so all three report the same number for the same weights and text.
"""

from __future__ import annotations

import numpy as np

from . import engine
from .config import ModelConfig
from .data import eval_windows


def evaluate(params: dict, config: ModelConfig, ids: np.ndarray, batch_size: int,
             seq_len: int, abort=None) -> float | None:
    """Mean cross-entropy (nats/char) over every next-character target of ids (N,).

    Forward only, no dropout, no cache, state carried across (T, B) windows (see
    data.eval_windows); the streams run in parallel (see engine). abort: optional
    callable checked between windows; if it returns True, None is returned. None
    also when ids has no target.
    """
    compiled = engine.compiled_inference(params, config, windows=True)  # once for all
    total, count, state = 0.0, 0, None
    for x, y, mask in eval_windows(ids, batch_size, seq_len):
        if abort is not None and abort():
            return None
        nll, n, state = engine.window_nll(params, config, x, y, mask, state,
                                          compiled=compiled)
        total += nll
        count += n
    return total / count if count else None
