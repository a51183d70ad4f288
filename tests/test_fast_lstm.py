"""The fast LSTM (charlstm/fast/lstm.py) equals the reference LSTM (charlstm/cells/lstm.py,
the maths as derived, which test_cells.py checks against finite differences and PyTorch).

Every proof runs on each way the fast LSTM can compute (NumPy ufuncs; numba step
kernels in a Python loop; whole compiled time loops calling BLAS) and on padded loop
columns (blocks of 8 and 16) or none: float64 to 1e-12, float32 to its rounding.
The numba variants skip, with the reason, where numba is not installed.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

from charlstm import ModelConfig, engine, fast, pool
from charlstm.cells import Cell
from charlstm.cells import lstm as reference
from charlstm.evaluate import evaluate
from charlstm.fast import lstm as fast_lstm
from charlstm.gradcheck import random_problem
from charlstm.model import forward, loss_and_grads, step

needs_numba = pytest.mark.skipif(not fast.settings.available("lstm_kernels"),
                                 reason="numba (the fast extra) is not installed")
VARIANTS = {"numpy": dict(numba=False), "numba-steps": dict(numba=True, fused_loops=False),
            "numba": dict(numba=True, fused_loops=True)}
VARIANT = [pytest.param("numpy"), pytest.param("numba-steps", marks=needs_numba),
           pytest.param("numba", marks=needs_numba)]
RTOL = {np.float64: 1e-12, np.float32: 1e-5}


@pytest.fixture
def variant(request):
    """The fast LSTM computing one way (VARIANTS), the model using it."""
    with fast.use(fast_cells=True, **VARIANTS[request.param]):
        yield request.param


def close(got, want, dtype, what=""):
    """Equal to rounding: relative to each array's own scale (a gradient summed over
    T*B terms is larger than a gate)."""
    rtol = RTOL[dtype]
    assert got.shape == want.shape, what
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(1.0, np.abs(want).max()),
                               err_msg=what)


def window(T, B, H, dtype, seed):
    """A random window: xw (T, B, 4H), W_hh (4H, H), b_hh (4H,), state0 and dstate
    (pairs of (B, H)), dhs (T, B, H)."""
    rng = np.random.default_rng(seed)
    xw = rng.normal(size=(T, B, 4 * H)).astype(dtype)
    W_hh = (rng.normal(size=(4 * H, H)) / np.sqrt(H)).astype(dtype)
    b_hh = rng.normal(size=4 * H).astype(dtype)
    state0 = tuple(rng.normal(size=(B, H)).astype(dtype) for _ in range(2))
    dhs = rng.normal(size=(T, B, H)).astype(dtype)
    dstate = tuple(rng.normal(size=(B, H)).astype(dtype) for _ in range(2))
    return xw, W_hh, b_hh, state0, dhs, dstate


def flat(result):
    """backward()'s results as a flat tuple: dxw, dh0, dc0, dW_hh, db_hh."""
    dxw, (dh0, dc0), dW_hh, db_hh = result
    return dxw, dh0, dc0, dW_hh, db_hh


def test_fast_cell_implements_the_whole_interface():
    members = [m for m in vars(Cell) if not m.startswith("_")] + list(Cell.__annotations__)
    for m in members:
        assert hasattr(fast_lstm, m), m
        if callable(getattr(Cell, m, None)):
            want = list(inspect.signature(getattr(Cell, m)).parameters)[1:]
            assert list(inspect.signature(getattr(fast_lstm, m)).parameters) == want, m
    for m in ("GATES", "STATE_NAMES", "GATE_NAMES", "TANH_GATES"):
        assert getattr(fast_lstm, m) == getattr(reference, m)
    with fast.use(fast_cells=True):
        assert fast.implementation("lstm") is fast_lstm
        assert fast.implementation("gru") is not None
    with fast.use(fast_cells=False):
        assert fast.implementation("lstm") is reference


@pytest.mark.parametrize("variant", VARIANT, indirect=True)
@pytest.mark.parametrize("pad", [0, 8, 16])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("T,B,H", [(1, 1, 3), (6, 5, 16), (3, 25, 8), (4, 9, 33)])
def test_window_equals_the_reference(variant, pad, dtype, T, B, H):
    """forward (outputs, final state, activations, keep gate), backward (dxw, dh0, dc0,
    dW_hh, db_hh), infer; the caller's arrays untouched."""
    xw, W_hh, b_hh, state0, dhs, dstate = window(T, B, H, dtype, seed=T * B + H)
    inputs = [a.copy() for a in (xw, W_hh, b_hh, *state0, dhs, *dstate)]
    with fast.use(pad_block=pad):
        hs, final, cache = fast_lstm.forward(xw, state0, W_hh, b_hh)
        grads = flat(fast_lstm.backward(dhs, dstate, cache))
        hs_i, final_i = fast_lstm.infer(xw, state0, W_hh, b_hh)
    want_hs, want_final, want_cache = reference.forward(xw, state0, W_hh, b_hh)
    want_grads = flat(reference.backward(dhs, dstate, want_cache))
    for name, got, want in [("hs", hs, want_hs), ("hT", final[0], want_final[0]),
                            ("cT", final[1], want_final[1]), ("infer hs", hs_i, want_hs),
                            ("infer hT", final_i[0], want_final[0]),
                            ("infer cT", final_i[1], want_final[1]),
                            ("keep gate", fast_lstm.keep_gate(cache),
                             reference.keep_gate(want_cache))]:
        assert got.dtype == dtype, name
        close(got, want, dtype, name)
    acts, want_acts = fast_lstm.activations(cache), reference.activations(want_cache)
    assert list(acts) == list(want_acts)
    for name in acts:
        close(acts[name], want_acts[name], dtype, name)
    for name, got, want in zip(("dxw", "dh0", "dc0", "dW_hh", "db_hh"), grads, want_grads):
        assert got.dtype == dtype, name
        close(got, want, dtype, name)
    for a, b in zip((xw, W_hh, b_hh, *state0, dhs, *dstate), inputs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("variant", VARIANT, indirect=True)
@pytest.mark.parametrize("pad", [0, 16])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_layer0_from_ids_equals_the_reference_on_the_gathered_input(variant, pad, dtype):
    """forward_ids / infer_ids (the gather straight into the gate buffer) == the
    reference forward / infer of xw = W_ih[:, ids]^T + b_ih; an id out of range is
    NumPy's IndexError."""
    T, B, H, V = 5, 6, 8, 11
    _, W_hh, b_hh, state0, dhs, dstate = window(T, B, H, dtype, seed=7)
    rng = np.random.default_rng(8)
    W_ih = rng.normal(size=(4 * H, V)).astype(dtype)
    b_ih = rng.normal(size=4 * H).astype(dtype)
    ids = rng.integers(0, V, size=(T, B))
    xw = np.add(W_ih.T, b_ih)[ids]
    with fast.use(pad_block=pad):
        hs, final, cache = fast_lstm.forward_ids(ids, W_ih, b_ih, state0, W_hh, b_hh)
        grads = flat(fast_lstm.backward(dhs, dstate, cache))
        hs_i, final_i = fast_lstm.infer_ids(ids, W_ih, b_ih, state0, W_hh, b_hh)
        with pytest.raises(IndexError):
            fast_lstm.forward_ids(np.full((2, 3), V), W_ih, b_ih, state0, W_hh, b_hh)
    want_hs, want_final, want_cache = reference.forward(xw, state0, W_hh, b_hh)
    for got, want in zip((hs, *final, hs_i, *final_i, *grads),
                         (want_hs, *want_final, want_hs, *want_final,
                          *flat(reference.backward(dhs, dstate, want_cache)))):
        close(got, want, dtype)


@pytest.mark.parametrize("variant", VARIANT, indirect=True)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B", [1, 4])
def test_step_equals_the_reference(variant, dtype, B):
    """One sampling step, with xw as model.step hands it over (the transposed view of
    a (4H, B) array, used in place) and as a plain (B, 4H) array."""
    xw, W_hh, b_hh, state0, _, _ = window(1, B, 6, dtype, seed=B)
    want = tuple(np.empty_like(s) for s in state0)
    reference.step(xw[0].copy(), state0, W_hh, b_hh, want)
    for given in (np.ascontiguousarray(xw[0].T).T, xw[0].copy()):
        got = tuple(np.empty_like(s) for s in state0)
        fast_lstm.step(given, state0, W_hh, b_hh, got)
        for a, b in zip(got, want):
            close(a, b, dtype)


def model_problem(dtype, T=7, B=5, L=2, H=6, V=9, seed=0):
    config = ModelConfig(vocab_size=V, hidden_size=H, num_layers=L, dropout=0.3)
    params, x, y, state, masks = random_problem(config, T, B, seed=seed, dropout_mask=True)
    params = {k: v.astype(dtype) for k, v in params.items()}
    state = tuple(s.astype(dtype) for s in state)
    masks = [m.astype(dtype) for m in masks]
    dstate = tuple(np.random.default_rng(seed).normal(size=s.shape).astype(dtype)
                   for s in state)
    return config, params, x, y, state, masks, dstate


def close_window(got, want, dtype):
    """Two WindowGrads equal to rounding: loss, every gradient, final state, dstate0."""
    assert got.loss == pytest.approx(want.loss, rel=RTOL[dtype])
    assert set(got.grads) == set(want.grads)
    for name in want.grads:
        assert got.grads[name].dtype == dtype
        close(got.grads[name], want.grads[name], dtype, name)
    for a, b in zip(got.state + got.dstate0, want.state + want.dstate0, strict=True):
        close(a, b, dtype)


@pytest.mark.parametrize("variant", VARIANT, indirect=True)
@pytest.mark.parametrize("pad", [0, 8])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_model_window_chunked_and_one_pass_equal_the_reference(variant, pad, dtype):
    """The whole model (layer 0 from ids, dropout, carried final-state gradient) on the
    fast LSTM == on the reference; and two chained halves on the fast LSTM (state
    carried forward, dL/d(state) carried back) == the reference's one pass."""
    config, params, x, y, state, masks, dstate = model_problem(dtype)
    with fast.use(fast_cells=False):
        want = loss_and_grads(params, config, x, y, state, masks, dstate)
        whole = loss_and_grads(params, config, x, y, state, masks)  # no final gradient
        want_logits, want_final, _ = forward(params, config, x, state)
    with fast.use(pad_block=pad):
        close_window(loss_and_grads(params, config, x, y, state, masks, dstate), want, dtype)
        T, k = x.shape[0], 3
        first = [m[:k] for m in masks]
        second = [m[k:] for m in masks]
        logits1, mid, _ = forward(params, config, x[:k], state)
        logits2, final, _ = forward(params, config, x[k:], mid)
        close(np.concatenate([logits1, logits2]), want_logits, dtype, "logits")
        for a, b in zip(final, want_final):
            close(a, b, dtype, "final state")
        mid = loss_and_grads(params, config, x[:k], y[:k], state, first).state
        loss2, g2, final2, dmid, _ = loss_and_grads(params, config, x[k:], y[k:], mid,
                                                    second)
        loss1, g1, _, dstate0, _ = loss_and_grads(
            params, config, x[:k], y[:k], state, first,
            tuple(d * (T - k) / k for d in dmid))
    # the whole mean is k/T of the first half's plus (T-k)/T of the second's
    assert (k * loss1 + (T - k) * loss2) / T == pytest.approx(whole.loss, rel=RTOL[dtype])
    for name in params:
        close(k / T * g1[name] + (T - k) / T * g2[name], whole.grads[name], dtype, name)
    for a, b in zip(dstate0, whole.dstate0):
        close(k / T * a, b, dtype, "dstate0")
    for a, b in zip(final2, whole.state):
        close(a, b, dtype, "final state")


@pytest.fixture
def thin_slices(monkeypatch):
    """Let tiny batches split across workers; the default thread count afterwards."""
    monkeypatch.setattr(engine, "fewest_streams", lambda H: 1)
    yield
    pool.set_num_threads(None)


@pytest.mark.parametrize("variant", VARIANT, indirect=True)
@pytest.mark.parametrize("pad", [0, 16])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_parallel_engine_on_the_fast_lstm_equals_one_reference_worker(
        variant, pad, dtype, thin_slices):
    """2 and 3 workers (uneven slices, each padded on its own) on the fast LSTM ==
    one worker on the reference: training windows and evaluation (the compiled
    step-major loop where the settings offer it)."""
    config, params, x, y, state, masks, dstate = model_problem(dtype, B=7)
    mask = np.ones(x.shape, bool)
    mask[4:, 2] = False
    with fast.use(fast_cells=False):
        want = engine.loss_and_grads(params, config, x, y, state, masks, dstate, threads=1)
        want_nll = engine.window_nll(params, config, x, y, mask, state, threads=1)
    with fast.use(pad_block=pad):
        compiled = engine.compiled_inference(params, config)
        # offered with whole compiled loops, which need NumPy's BLAS bound for numba
        assert (compiled is not None) == (variant == "numba" and fast_lstm.fused_loops(dtype))
        for threads in (2, 3):
            got = engine.loss_and_grads(params, config, x, y, state, masks, dstate,
                                        threads=threads)
            close_window(got, want, dtype)
            nll = engine.window_nll(params, config, x, y, mask, state, threads=threads,
                                    compiled=compiled)
            assert nll[1] == want_nll[1]
            assert nll[0] == pytest.approx(want_nll[0], rel=RTOL[dtype])
            for a, b in zip(nll[2], want_nll[2]):
                close(a, b, dtype)


@pytest.mark.parametrize("variant", VARIANT, indirect=True)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sampling_steps_and_evaluation_equal_the_reference(variant, dtype):
    """model.step on the fast LSTM == on the reference, step after step; and a whole
    evaluation pass over ragged windows."""
    config, params, x, _, state, _, _ = model_problem(dtype, L=3)
    ids = np.random.default_rng(1).integers(0, config.vocab_size, size=101)
    runs = {}
    for fast_cells in (False, True):
        with fast.use(fast_cells=fast_cells):
            s, outputs = state, []
            for t in range(x.shape[0]):
                logits, s = step(params, config, x[t], s)
                outputs += [logits, *s]
            runs[fast_cells] = outputs, evaluate(params, config, ids, 4, 9)
    for got, want in zip(runs[True][0], runs[False][0], strict=True):
        close(got, want, dtype)
    assert runs[True][1] == pytest.approx(runs[False][1], rel=RTOL[dtype])


def test_settings_are_read_from_the_environment_and_switched_in_one_place():
    """CHARLSTM_BACKEND picks the settings (numba, numpy, reference); use() changes a
    copy while it is open and restores the one before, nested too; a Settings is
    frozen, so nothing switches it behind the wing's back."""
    from_env = fast.settings.from_environment
    assert from_env({}) == fast.Settings()
    assert from_env({"CHARLSTM_BACKEND": "numba"}) == fast.Settings()
    assert from_env({"CHARLSTM_BACKEND": "numpy"}) == fast.Settings(numba=False)
    assert from_env({"CHARLSTM_BACKEND": "reference"}) == fast.Settings(fast_cells=False,
                                                                        numba=False)
    before = fast.current()
    with fast.use(pad_block=8) as outer:
        assert fast.current() is outer and outer.pad_block == 8
        with fast.use(numba=False, fused_optimizer=False):
            assert fast.current() == fast.Settings(**{**vars(before), "pad_block": 8,
                                                      "numba": False,
                                                      "fused_optimizer": False})
            assert fast.compiled("kernels") is None and fast.compiled("lstm_kernels") is None
        assert fast.current() is outer
    assert fast.current() is before
    with pytest.raises(AttributeError):
        before.numba = False
    with pytest.raises(TypeError):
        fast.use(no_such_switch=True).__enter__()
    assert fast.current() is before


def test_reference_cells_import_nothing_of_the_package_but_each_other():
    """cells/ is the maths as derived: NumPy and the standard library, never the fast
    wing or any other part of charlstm (relative imports stay inside cells/)."""
    allowed = {"numpy", "typing", "__future__"}
    for path in Path(reference.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                assert {a.name.split(".")[0] for a in node.names} <= allowed, path.name
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    assert node.level == 1, (path.name, node.module)
                else:
                    assert node.module.split(".")[0] in allowed, (path.name, node.module)
