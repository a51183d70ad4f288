"""Evaluation: mean cross-entropy of a model over a whole text, forward only.

Shape legend: T window length, B streams, V vocab.

Used by `charlstm eval`, by the trainer's validation passes and by the benchmarks,
so all three report the same number for the same weights and text.
"""

from __future__ import annotations

import threading

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
    if compiled is not None:
        return _evaluate_compiled(compiled, config, ids, batch_size, seq_len, abort)
    total, count, state = 0.0, 0, None
    for x, y, mask in eval_windows(ids, batch_size, seq_len):
        if abort is not None and abort():
            return None
        nll, n, state = engine.window_nll(params, config, x, y, mask, state)
        total += nll
        count += n
    return total / count if count else None


def _evaluate_compiled(compiled, config: ModelConfig, ids: np.ndarray, batch_size: int,
                       seq_len: int, abort) -> float | None:
    """evaluate() on the compiled step-major loop: each worker runs its slice of the
    streams through every window on its own, carrying its slice's state, so workers
    never wait for each other between windows (with one core busy, a meeting per
    window would cost the slower worker's time every window). The sums add per slice
    in window order, then in slice order: the same bits for the same thread count."""
    B = min(batch_size, len(ids) - 1)
    if B < 1:
        return None
    stopped = threading.Event()

    def work(s: slice) -> tuple[float, int] | None:
        total, count, state = 0.0, 0, None
        for x, y, mask in eval_windows(ids, batch_size, seq_len, s):
            if stopped.is_set() or (abort is not None and abort()):
                stopped.set()
                return None
            nll, n, state = compiled.run.window_nll(compiled.weights, x, y, mask, state)
            total += nll
            count += n
        return total, count

    parts = engine.map_streams(work, B, config.hidden_size,
                               fewest=engine.COMPILED_SLICE_STREAMS)
    if stopped.is_set():
        return None
    total, count = 0.0, 0
    for part_total, part_count in parts:
        total += part_total
        count += part_count
    return total / count if count else None
