"""Evaluation with the hidden units split across workers (charlstm.stack_units)
computes what the serial compiled loop computes.

Proofs: the unit split == stack_numba's one-worker loop (float64 to 1e-12, float32 to
its tolerance) for one to three layers, hidden sizes the workers do not divide, two
and three workers, B not a loop width, a carried state and a partial mask, in chunks of
one step, of several with a ragged last one, and of the whole window; the same split
is bit-identical run to run; a failing worker releases the others; engine and
evaluate pick the split by engine.unit_workers' rule.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from charlstm import ModelConfig, engine
from charlstm.cells import lstm
from charlstm.evaluate import evaluate
from charlstm.gradcheck import random_problem

if engine.stack_units is None:  # without numba (or its BLAS) there is no compiled loop
    pytest.skip("the unit split needs numba and NumPy's CBLAS", allow_module_level=True)
stack_units, stack_numba = engine.stack_units, engine.stack_numba

TOL = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-6)}


def _problem(V, H, L, B, T, dtype, seed=0):
    config = ModelConfig(vocab_size=V, hidden_size=H, num_layers=L)
    params = {k: v.astype(dtype) for k, v in random_problem(config, 2, 2, seed=seed)[0].items()}
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, V, (T, B)), rng.integers(0, V, (T, B))
    mask = rng.random((T, B)) < 0.8
    state = tuple(rng.standard_normal((L, B, H)).astype(dtype) * 0.5 for _ in range(2))
    return config, params, x, y, mask, state


def _split(params, L, workers):
    weights = stack_numba.prepare(params, L)
    return weights, stack_units.Split(weights, stack_units.prepare(weights, workers))


def _units(split, x, y, mask, state):
    with engine._one_blas_thread():
        return stack_units.window_nll(split, x, y, mask, state,
                                      engine._executor(len(split.parts)).submit)


@pytest.mark.parametrize("chunk", ["step", "ragged", "window"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("V,H,L,B,workers", [(7, 5, 1, 3, 2), (11, 16, 2, 5, 3),
                                             (5, 33, 3, 4, 2), (6, 9, 2, 2, 3)])
def test_unit_split_equals_the_serial_compiled_loop(monkeypatch, V, H, L, B, workers,
                                                    dtype, chunk):
    T = 9
    config, params, x, y, mask, state = _problem(V, H, L, B, T, dtype, seed=H)
    n = lstm.loop_width(B, params["lstm.weight_hh_l0"])
    columns = {"step": 1, "ragged": 4 * n, "window": T * n}[chunk]
    monkeypatch.setattr(stack_units, "CHUNK_COLUMNS", columns)  # chunks of 1, 4 (+1), 9
    weights, split = _split(params, L, workers)
    assert [p[4].shape[1] for p in split.parts] == [
        4 * (b - a) for a, b in stack_units.unit_ranges(H, workers)]
    want = stack_numba.window_nll(weights, x, y, mask, state)
    got = _units(split, x, y, mask, state)
    assert got[1] == want[1] == mask.sum()
    assert got[0] == pytest.approx(want[0], rel=TOL[dtype]["rtol"])
    for a, b in zip(got[2], want[2]):
        assert a.shape == (L, B, H) and a.dtype == dtype
        np.testing.assert_allclose(a, b, **TOL[dtype])
    # the final state carries on: a second window from it agrees too
    again = _units(split, y, x, ~mask, got[2])
    want = stack_numba.window_nll(weights, y, x, ~mask, want[2])
    assert again[0] == pytest.approx(want[0], rel=TOL[dtype]["rtol"])
    # and from a zero state (None)
    zero = _units(split, x, y, mask, None)
    assert zero[0] == pytest.approx(stack_numba.window_nll(weights, x, y, mask, None)[0],
                                    rel=TOL[dtype]["rtol"])


def test_unit_split_is_bit_identical_run_to_run():
    config, params, x, y, mask, state = _problem(13, 24, 2, 6, 20, np.float32)
    split = _split(params, 2, 2)[1]
    first = _units(split, x, y, mask, state)
    for _ in range(3):
        again = _units(split, x, y, mask, state)
        assert again[0] == first[0]
        assert all(a.tobytes() == b.tobytes() for a, b in zip(again[2], first[2]))


def test_more_workers_than_units_or_streams():
    """prepare gives no worker an empty share of units; a worker may have no stream
    for the logits (B < workers) and still does its units."""
    config, params, x, y, mask, state = _problem(5, 2, 2, 1, 6, np.float64)
    weights, split = _split(params, 2, 3)
    assert len(split.parts) == 2
    got = _units(split, x, y, mask, state)
    assert got[0] == pytest.approx(stack_numba.window_nll(weights, x, y, mask, state)[0],
                                   rel=1e-12)


def test_a_failing_worker_releases_the_others(monkeypatch):
    """Worker 1 raises before its first barrier: worker 0 must not wait for it
    forever; the error reaches the caller."""
    config, params, x, y, mask, state = _problem(7, 8, 2, 3, 5, np.float64)
    split = _split(params, 2, 2)[1]
    real = stack_units._worker

    def worker(w, *args):
        if w == 1:
            raise RuntimeError("worker 1 failed")
        return real(w, *args)

    monkeypatch.setattr(stack_units, "_worker", worker)
    outcome = []

    def call():
        try:
            _units(split, x, y, mask, state)
        except RuntimeError as e:
            outcome.append(str(e))

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "worker 0 is still waiting at its barrier"
    assert outcome == ["worker 1 failed"]


def test_unit_workers_rule(monkeypatch):
    monkeypatch.setattr(engine, "available_cores", lambda: 8)
    assert engine.MIN_WORKER_UNITS == 128
    assert [engine.unit_workers(H, 2) for H in (128, 255, 256, 384, 512, 1024)] == [
        1, 1, 2, 2, 2, 2]
    assert engine.unit_workers(512, 8) == 4  # at least 128 units each
    assert engine.unit_workers(2048, 16) == 8  # never more workers than cores
    assert engine.unit_workers(512, 1) == 1
    monkeypatch.setattr(engine, "available_cores", lambda: 1)
    assert engine.unit_workers(1024, 4) == 1


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_evaluate_splits_the_units_by_the_rule(monkeypatch, dtype):
    """evaluate (and so validation and `charlstm eval`) runs the unit split where
    unit_workers allows it, and gets the loss the one-worker loop gets."""
    monkeypatch.setattr(lstm, "BACKEND", "numba")
    monkeypatch.setattr(engine, "available_cores", lambda: 4)
    monkeypatch.setattr(engine, "MIN_WORKER_UNITS", 4)
    config = ModelConfig(vocab_size=9, hidden_size=12, num_layers=2)
    params = {k: v.astype(dtype) for k, v in random_problem(config, 2, 2, seed=3)[0].items()}
    ids = np.random.default_rng(3).integers(0, 9, size=301)
    with engine.num_threads(1):
        assert not isinstance(engine.compiled_inference(params, config, windows=True,
                                                        streams=5), stack_units.Split)
        serial = evaluate(params, config, ids, 5, 13)
    for threads in (2, 3):
        with engine.num_threads(threads):
            split = engine.compiled_inference(params, config, windows=True, streams=5)
            assert isinstance(split, stack_units.Split) and len(split.parts) == threads
            assert evaluate(params, config, ids, 5, 13) == pytest.approx(
                serial, rel=TOL[dtype]["rtol"])
    # sampling keeps the plain compiled weights; so does a batch that splits into
    # slices of UNIT_SPLIT_BELOW streams or more; past the byte limit per worker, windows
    assert not isinstance(engine.compiled_inference(params, config, threads=2),
                          stack_units.Split)
    wide = 2 * engine.UNIT_SPLIT_BELOW
    assert not isinstance(engine.compiled_inference(params, config, windows=True,
                                                    threads=2, streams=wide),
                          stack_units.Split)
    assert isinstance(engine.compiled_inference(params, config, windows=True, threads=2,
                                                streams=wide - 1), stack_units.Split)
    monkeypatch.setattr(engine, "STEP_MAJOR_MAX_BYTES", 1)
    assert engine.compiled_inference(params, config, windows=True, threads=2,
                                     streams=5) is None
