"""Evaluation: mean cross-entropy of a model over a whole text, forward only.

Shape legend: T window length, B streams, V vocab.

Used by `charlstm eval`, by the trainer's validation passes and by the benchmarks,
so all three report the same number for the same weights and text.
"""

from __future__ import annotations

import threading

import numpy as np

from . import engine, pool
from .config import ModelConfig
from .data import eval_shape, eval_windows


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
        B, windows = eval_shape(len(ids), batch_size, seq_len)
        plan = engine.eval_plan(B, windows, compiled, config)
        if plan is not None:
            return _run_plan(plan, compiled, ids, batch_size, seq_len, windows, abort)
    total, count, state = 0.0, 0, None
    for x, y, mask in eval_windows(ids, batch_size, seq_len):
        if abort is not None and abort():
            return None
        nll, n, state = engine.window_nll(params, config, x, y, mask, state,
                                          compiled=compiled)
        total += nll
        count += n
    return total / count if count else None


def _run_plan(plan: engine.EvalPlan, compiled, ids, batch_size: int, seq_len: int,
              windows: int, abort) -> float | None:
    """evaluate() on engine.eval_plan's workers: each runs its blocks of streams through
    their windows; a block cut between two workers hands its state on at the window
    where it is cut. The sums add per piece, then in block and window order: the same
    bits for the same plan whatever order the workers finish in."""
    # (block, window) -> [set when the state there is ready, the state]
    handoff = {(p.chain, p.stop): [threading.Event(), None] for pieces in plan.plans
               for p in pieces if p.stop < windows}
    stopped = threading.Event()

    def run(p) -> tuple | None:
        state = None
        if p.start > 0:
            entry = handoff[p.chain, p.start]
            entry[0].wait()
            state = entry[1]
        total, count = 0.0, 0
        for x, y, mask in eval_windows(ids, batch_size, seq_len, plan.blocks[p.chain],
                                       slice(p.start, p.stop)):
            if stopped.is_set() or (abort is not None and abort()):
                stopped.set()
                return None
            nll, n, state = compiled.run.window_nll(compiled.weights, x, y, mask, state)
            total += nll
            count += n
        if p.stop < windows:
            handoff[p.chain, p.stop][1] = state
            handoff[p.chain, p.stop][0].set()
        return p, total, count

    def work(pieces) -> list:
        done = []
        try:
            for p in pieces:
                result = run(p)
                if result is None:
                    break
                done.append(result)
        except BaseException:
            stopped.set()
            raise
        finally:  # a piece that stopped or failed must not leave the next one waiting
            if stopped.is_set():
                for ready, _ in handoff.values():
                    ready.set()
        return done

    results = sorted((r for part in pool.run_workers(work, plan.plans) for r in part),
                     key=lambda r: (r[0].chain, r[0].start))
    if stopped.is_set():
        return None
    count = sum(r[2] for r in results)
    total = 0.0
    for r in results:
        total += r[1]
    return total / count if count else None
