"""The stream-parallel engine: any number of workers computes what one does.

Proofs: parallel == serial for every cell (float64 to 1e-12, float32 to its
tolerance), with B not divisible by the workers and with dropout; gradients
checked against finite differences and against PyTorch with two workers; the
same thread count is bit-identical run to run; exact resume with two threads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import charlstm
from charlstm import ModelConfig, engine, fast, model, pool, session
from charlstm.gradcheck import numeric_gradient, random_problem, relative_error

CELLS = ["lstm", "gru", "rnn"]
TOL = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-6)}


@pytest.fixture(autouse=True)
def thin_slices(monkeypatch):
    """Let tiny test batches split (a slice may hold a single stream); restore the
    default thread count afterwards."""
    monkeypatch.setattr(engine, "fewest_streams", lambda H: 1)
    monkeypatch.setattr(engine, "COMPILED_SLICE_STREAMS", 1)
    yield
    pool.set_num_threads(None)


def test_stream_slices_are_contiguous_balanced_and_never_too_thin(monkeypatch):
    parts = engine.stream_slices(7, 6, 3)
    assert [(s.start, s.stop) for s in parts] == [(0, 3), (3, 5), (5, 7)]
    assert engine.stream_slices(2, 6, 8) == [slice(0, 1), slice(1, 2)]  # at most B workers
    monkeypatch.undo()  # the real rule: at least max(4, min(16, H/32)) streams per slice
    assert [engine.fewest_streams(H) for H in (64, 128, 256, 384, 512, 768, 1024, 4096)] == [
        4, 4, 8, 12, 16, 16, 16, 16]
    # the presets' widest shapes split too: 1x768 and 1x1024 at B = 32 on two workers
    assert engine.stream_slices(32, 768, 2) == [slice(0, 16), slice(16, 32)]
    assert engine.stream_slices(32, 1024, 2) == [slice(0, 16), slice(16, 32)]
    assert len(engine.stream_slices(31, 768, 2)) == 1
    assert len(engine.stream_slices(7, 128, 2)) == 1
    assert len(engine.stream_slices(8, 128, 2)) == 2
    assert len(engine.stream_slices(31, 512, 2)) == 1
    assert len(engine.stream_slices(32, 512, 2)) == 2
    assert len(engine.stream_slices(50, 512, 2)) == 2
    assert len(engine.stream_slices(64, 512, 8)) == 4
    assert len(engine.stream_slices(16, 1024, 2)) == 1
    assert len(engine.stream_slices(1, 5000, 2)) == 1
    for B, H, n in [(33, 384, 4), (7, 1000, 3), (100, 128, 8), (50, 512, 16)]:
        parts = engine.stream_slices(B, H, n)  # one slice, or none thinner than the rule
        assert len(parts) == 1 or all(s.stop - s.start >= engine.fewest_streams(H)
                                      for s in parts)
    # the compiled loops (evaluation, sampling) ask for their own minimum
    n = engine.COMPILED_SLICE_STREAMS
    assert len(engine.stream_slices(2 * n - 1, 512, 2, n)) == 1
    assert len(engine.stream_slices(2 * n, 512, 2, n)) == 2


def test_the_pool_splits_by_the_fewest_streams_it_is_given_and_keeps_order():
    """pool knows nothing of H: the engine turns H into `fewest`, the pool only splits."""
    assert pool.stream_slices(10, 5, 4) == [slice(0, 5), slice(5, 10)]
    assert pool.stream_slices(9, 5, 4) == [slice(0, 9)]
    assert pool.stream_slices(3, 0, 8) == [slice(0, 1), slice(1, 2), slice(2, 3)]
    assert pool.map_streams(lambda s: (s.start, s.stop), 10, 3, 3) == [(0, 4), (4, 7), (7, 10)]
    assert pool.map_chunks(lambda k, a, b: (k, b - a), [5, 2], threads=2) == [
        (k, b - a) for k, a, b in pool.weight_chunks([5, 2])]


def test_training_and_evaluation_split_by_the_same_rule(monkeypatch):
    """loss_and_grads, forward and window_nll all split from fewest_streams(H)."""
    monkeypatch.undo()
    seen, real = [], engine.map_streams

    def spy(fn, B, H, threads=None, fewest=None):
        seen.append(len(engine.stream_slices(B, H, threads, fewest)))
        return real(fn, B, H, threads, fewest)

    monkeypatch.setattr(engine, "map_streams", spy)
    config = ModelConfig(vocab_size=5, hidden_size=512, num_layers=1)
    params = model.init_params(config, np.random.default_rng(0))
    for B in (64, 16):
        x = np.zeros((2, B), dtype=np.int64)
        engine.loss_and_grads(params, config, x, x, threads=2)
        engine.forward(params, config, x, threads=2)
        engine.window_nll(params, config, x, x, np.ones(x.shape, bool), threads=2)
    # B = 16 at H = 512 stays on one worker: loss_and_grads is then model.loss_and_grads
    # itself (no map), forward and window_nll map one slice
    assert seen == [2, 2, 2, 1, 1]
    pool.set_num_threads(None)


def test_set_num_threads_validates_and_defaults_to_the_affinity():
    charlstm.set_num_threads(3)
    assert charlstm.get_num_threads() == 3
    charlstm.set_num_threads(None)
    assert charlstm.get_num_threads() == pool.available_cores()
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises(ValueError, match="positive integer"):
            charlstm.set_num_threads(bad)


def _blas_threads() -> list[int]:
    """What threadpoolctl reports for every BLAS loaded in this process."""
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_set_num_threads_bounds_the_blas_inside_and_outside_the_engine(monkeypatch):
    """set_num_threads(n) holds the BLAS to n threads everywhere, as torch's does: in a
    one-worker window (the serial path runs on the process's BLAS), in every worker of a
    two-worker window (one thread each), in a plain CharLSTM.forward; None gives the
    BLAS back the thread counts it had before."""
    original = _blas_threads()
    assert original
    seen, real = [], model.forward

    def spy(*args, **kwargs):
        seen.append(_blas_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    net = charlstm.CharLSTM(ModelConfig(vocab_size=9, hidden_size=5), dtype=np.float64)
    x = np.zeros((3, 1), dtype=np.int64)  # one stream: one worker
    for n in (1, 2):
        charlstm.set_num_threads(n)
        assert _blas_threads() == [n] * len(original)  # outside any engine call
        seen.clear()
        assert engine.map_streams(lambda s: _blas_threads(), 4, 5, threads=1) == [
            [n] * len(original)]  # a one-worker window
        assert engine.map_streams(lambda s: _blas_threads(), 4, 5, threads=2) == [
            [1] * len(original)] * 2  # every worker of two
        net.forward(x)
        assert seen == [[n] * len(original)]
        with pool.num_threads(3 - n):  # the context restores the limit it found
            assert _blas_threads() == [3 - n] * len(original)
        assert _blas_threads() == [n] * len(original)
    charlstm.set_num_threads(1)
    charlstm.set_num_threads(None)
    assert _blas_threads() == original


def test_no_numba_kernel_starts_threads_of_its_own():
    """The thread-count promise covers numba only while no kernel is parallel: numba's
    own pool would ignore set_num_threads' BLAS limit."""
    for path in Path(charlstm.__file__).parent.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "parallel=True" not in text and "prange" not in text, path


def _problem(cell, dtype, B=7, L=2, seed=0):
    config = ModelConfig(vocab_size=11, hidden_size=6, num_layers=L, dropout=0.3, cell=cell)
    params, x, y, state, masks = random_problem(config, 5, B, seed, dropout_mask=True)
    cast = lambda a: a.astype(dtype)  # noqa: E731
    return (config, {k: cast(v) for k, v in params.items()}, x, y,
            tuple(map(cast, state)), [cast(m) for m in masks])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", CELLS)
def test_parallel_equals_serial(cell, dtype):
    """B = 7 over 2 and 3 workers (uneven slices), two layers with dropout and a
    gradient from a later window: loss, every gradient, the final state, the initial
    state's gradient, eval logits and the eval loss all agree."""
    config, params, x, y, state, masks = _problem(cell, dtype)
    dstate = tuple(s[::-1] * 0.3 for s in state)
    tol = TOL[dtype]
    serial = engine.loss_and_grads(params, config, x, y, state, masks, dstate, threads=1)
    logits1, final1 = engine.forward(params, config, x, state, threads=1)
    mask = np.ones(x.shape, bool)
    mask[3:, 5] = False
    nll1 = engine.window_nll(params, config, x, y, mask, state, threads=1)
    for threads in (2, 3):
        loss, grads, final, dstate0, _ = engine.loss_and_grads(
            params, config, x, y, state, masks, dstate, threads=threads)
        assert loss == pytest.approx(serial.loss, rel=tol["rtol"])
        assert set(grads) == set(params)
        for name in params:
            np.testing.assert_allclose(grads[name], serial.grads[name], err_msg=name, **tol)
        for a, b in zip(final + dstate0, serial.state + serial.dstate0):
            np.testing.assert_allclose(a, b, **tol)
        logits, final = engine.forward(params, config, x, state, threads=threads)
        np.testing.assert_allclose(logits, logits1, **tol)
        for a, b in zip(final, final1):
            np.testing.assert_allclose(a, b, **tol)
        nll = engine.window_nll(params, config, x, y, mask, state, threads=threads)
        assert nll[1] == nll1[1] == mask.sum()
        assert nll[0] == pytest.approx(nll1[0], rel=tol["rtol"])
    # the compiled step-major loop (the cell's stack_inference) gives the same loss and state
    compiled = engine.compiled_inference(params, config)
    offer = getattr(fast.implementation(cell), "stack_inference", None)
    assert (compiled is not None) == (offer is not None and offer(dtype) is not None)
    for threads in (1, 2, 3) if compiled is not None else ():
        nll = engine.window_nll(params, config, x, y, mask, state, threads=threads,
                                compiled=compiled)
        assert nll[1] == nll1[1]
        assert nll[0] == pytest.approx(nll1[0], rel=tol["rtol"])
        for a, b in zip(nll[2], nll1[2]):
            np.testing.assert_allclose(a, b, **tol)


def test_one_worker_is_exactly_model_loss_and_grads():
    config, params, x, y, state, masks = _problem("lstm", np.float32)
    loss, grads, _, _, _ = model.loss_and_grads(params, config, x, y, state, masks)
    ours = engine.loss_and_grads(params, config, x, y, state, masks, threads=1)
    assert ours.loss == loss
    assert all(ours.grads[k].tobytes() == grads[k].tobytes() for k in grads)


@pytest.mark.parametrize("cell", CELLS)
def test_same_thread_count_is_bit_identical_run_to_run(cell):
    config, params, x, y, state, masks = _problem(cell, np.float32, B=9)
    runs = [engine.loss_and_grads(params, config, x, y, state, masks, threads=2)
            for _ in range(3)]
    for loss, grads, final, dstate0, _ in runs[1:]:
        assert loss == runs[0].loss
        assert all(grads[k].tobytes() == runs[0].grads[k].tobytes() for k in grads)
        assert all(a.tobytes() == b.tobytes()
                   for a, b in zip(final + dstate0, runs[0].state + runs[0].dstate0))


# lstm "padded": the fast LSTM's time loop on zero-padded columns (fast.layout.loop_width,
# forced here; the slices of 3 and 2 streams run 4 and 2 wide)
CASES = [(cell, False) for cell in CELLS] + [("lstm", True)]


@pytest.mark.parametrize("cell,padded", CASES)
def test_gradients_with_two_workers_match_finite_differences(fast_settings, cell, padded):
    fast_settings(pad_block=16 if padded else 0)
    config, params, x, y, state, masks = _problem(cell, np.float64, B=5, L=2, seed=3)

    def loss() -> float:
        return engine.loss_and_grads(params, config, x, y, state, masks, threads=2).loss

    _, grads, _, dstate0, _ = engine.loss_and_grads(params, config, x, y, state, masks,
                                                    threads=2)
    for name, value in params.items():
        assert relative_error(grads[name], numeric_gradient(loss, value)) < 1e-6, name
    for s, ds in zip(state, dstate0):
        assert relative_error(ds, numeric_gradient(loss, s)) < 1e-6


@pytest.mark.parametrize("cell,padded", CASES)
def test_two_workers_match_torch_autograd(fast_settings, torch_oracle, cell, padded):
    fast_settings(pad_block=16 if padded else 0)
    config, params, x, y, state, _ = _problem(cell, np.float64, B=5, L=2, seed=4)
    loss, grads, final, dstate0, _ = engine.loss_and_grads(params, config, x, y, state,
                                                           threads=2)
    theirs = torch_oracle.torch_loss_and_grads(params, cell, config.num_layers, x, y, state)
    assert loss == pytest.approx(theirs[0], rel=1e-10)
    for name in params:
        np.testing.assert_allclose(grads[name], theirs[3][name], rtol=1e-9, atol=1e-10,
                                   err_msg=name)
    for a, b in zip(final + dstate0, theirs[2] + theirs[4]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_charlstm_methods_use_the_engine():
    net = charlstm.CharLSTM(ModelConfig(vocab_size=9, hidden_size=5, num_layers=2),
                            dtype=np.float64)
    x = np.random.default_rng(0).integers(0, 9, size=(4, 6))
    charlstm.set_num_threads(1)
    one = net.loss_and_grads(x, x, train=False), net.forward(x)
    charlstm.set_num_threads(3)
    three = net.loss_and_grads(x, x, train=False), net.forward(x)
    assert three[0][0] == pytest.approx(one[0][0], rel=1e-12)
    np.testing.assert_allclose(three[1][0], one[1][0], rtol=1e-12, atol=1e-12)


def test_exact_resume_with_two_threads(tmp_path, monkeypatch):
    """Training on 2 threads (B = 3: uneven slices, with dropout): stopping by a signal
    and resuming ends bit-identical to the straight run; a second straight run too."""
    from test_train import _final_arrays, _stop_by_signal_after, tiny_config

    charlstm.set_num_threads(2)
    straight = [session.start_training(tiny_config(tmp_path, name, batch_size=3))
                for name in ("a", "b")]
    _stop_by_signal_after(monkeypatch, 7)
    first = session.start_training(tiny_config(tmp_path, "resumed", batch_size=3))
    assert first.interrupted and first.step == 7
    monkeypatch.undo()
    monkeypatch.setattr(engine, "fewest_streams", lambda H: 1)
    monkeypatch.setattr(engine, "COMPILED_SLICE_STREAMS", 1)
    second = session.resume_training(tmp_path / "resumed")
    assert second.step == straight[0].step == 16
    assert second.val_loss == straight[0].val_loss == straight[1].val_loss
    a, _ = _final_arrays(tmp_path / "a")
    for other in ("b", "resumed"):
        b, _ = _final_arrays(tmp_path / other)
        assert set(a) == set(b)
        assert all(a[k].tobytes() == b[k].tobytes() for k in a), other

