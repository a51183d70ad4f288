"""Proofs for the fast paths: numba kernels == NumPy ufuncs, cache-free evaluation ==
training forward, single-step sampling == whole-window forward."""

from __future__ import annotations

import numpy as np
import pytest

from charlstm import CharLSTM, ModelConfig, layers
from charlstm.cells import lstm
from charlstm.cells.lstm_numba import KERNELS, _tanh32
from charlstm.gradcheck import random_problem
from charlstm.model import backward, forward, step

BACKENDS = ["numpy", "numba"]
TOL = {np.float64: dict(rtol=1e-12, atol=1e-13), np.float32: dict(rtol=2e-5, atol=2e-6)}


def _loss_and_grads(params, config, x, y, state, masks=None, dstate=None):
    logits, final, cache = forward(params, config, x, state, masks)
    loss, dlogits = layers.softmax_cross_entropy(logits, y)
    grads, dstate0 = backward(dlogits, dstate, cache)
    return logits, final, grads, dstate0


def _run_with_backend(monkeypatch, backend, *args, **kwargs):
    monkeypatch.setattr(lstm, "BACKEND", backend)
    return _loss_and_grads(*args, **kwargs)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("V,H,L,T,B", [(7, 5, 1, 4, 3), (11, 16, 2, 9, 2), (5, 33, 3, 6, 4)])
def test_numba_kernels_match_numpy_ufuncs(monkeypatch, dtype, V, H, L, T, B):
    config = ModelConfig(vocab_size=V, hidden_size=H, num_layers=L, dropout=0.25)
    params, x, y, state, masks = random_problem(config, T, B, seed=V + H + T,
                                                dropout_mask=True)
    params = {k: v.astype(dtype) for k, v in params.items()}
    state = tuple(s.astype(dtype) for s in state)
    masks = [m.astype(dtype) for m in masks] if masks else None
    rng = np.random.default_rng(1)
    dstate = tuple(rng.normal(size=s.shape).astype(dtype) for s in state)
    args = (params, config, x, y, state, masks, dstate)
    ref = _run_with_backend(monkeypatch, "numpy", *args)
    fast = _run_with_backend(monkeypatch, "numba", *args)
    tol = TOL[dtype]
    np.testing.assert_allclose(fast[0], ref[0], **tol)
    for a, b in zip(fast[1], ref[1]):
        np.testing.assert_allclose(a, b, **tol)
    for name in params:
        assert fast[2][name].dtype == dtype
        np.testing.assert_allclose(fast[2][name], ref[2][name], err_msg=name, **tol)
    for a, b in zip(fast[3], ref[3]):
        np.testing.assert_allclose(a, b, **tol)


def test_float32_tanh_kernel_is_accurate_everywhere():
    x = np.concatenate([np.linspace(-20, 20, 400_001, dtype=np.float32),
                        np.logspace(-30, 1, 20_001, dtype=np.float32)])
    x = np.concatenate([x, -x[-20_001:]])
    out = np.array([_tanh32(v) for v in x[::97]], dtype=np.float32)  # scalar calls
    ref = np.tanh(x[::97].astype(np.float64))
    assert np.max(np.abs(out - ref) / np.abs(ref).clip(1e-30)) < 1e-6
    assert np.isnan(_tanh32(np.float32(np.nan)))
    assert _tanh32(np.float32(np.inf)) == 1.0 and _tanh32(np.float32(-np.inf)) == -1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_is_not_hidden_by_the_kernels(monkeypatch, backend):
    """A diverged model must show NaN (the training loop stops on it), not clamp it away."""
    monkeypatch.setattr(lstm, "BACKEND", backend)
    model = CharLSTM(ModelConfig(vocab_size=5, hidden_size=4, num_layers=1), seed=0)
    model.params["lstm.weight_hh_l0"][0, 0] = np.nan
    logits, _ = model.forward(np.zeros((3, 2), dtype=np.int64))
    assert np.isnan(logits).any()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("L,B", [(1, 1), (2, 3), (3, 2)])
def test_evaluation_path_without_cache_equals_training_forward(monkeypatch, backend, L, B):
    monkeypatch.setattr(lstm, "BACKEND", backend)
    config = ModelConfig(vocab_size=9, hidden_size=7, num_layers=L)
    params, x, _, state, _ = random_problem(config, 6, B, seed=L * 10 + B)
    logits, final, cache = forward(params, config, x, state)
    fast_logits, fast_final, none = forward(params, config, x, state, need_cache=False)
    assert none is None
    np.testing.assert_allclose(fast_logits, logits, rtol=0, atol=1e-14)
    for a, b in zip(fast_final, final):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-14)
    model = CharLSTM(config, params=params, dtype=np.float64)
    np.testing.assert_allclose(model.forward(x, state)[0], logits, rtol=0, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("L,B", [(1, 1), (2, 1), (2, 4)])
def test_sampling_step_equals_whole_window(monkeypatch, backend, L, B):
    monkeypatch.setattr(lstm, "BACKEND", backend)
    config = ModelConfig(vocab_size=10, hidden_size=6, num_layers=L)
    params, x, _, state, _ = random_problem(config, 7, B, seed=L + B)
    logits, final, _ = forward(params, config, x, state)
    s = state
    before = tuple(a.copy() for a in state)
    for t in range(x.shape[0]):
        out, s = step(params, config, x[t], s)
        np.testing.assert_allclose(out, logits[t], rtol=0, atol=1e-13)
    for a, b in zip(s, final):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)
    for a, b in zip(state, before):  # the caller's state is never modified
        np.testing.assert_array_equal(a, b)
    out, s = step(params, config, x[0], None)  # None means zeros
    zero = tuple(np.zeros_like(a) for a in state)
    np.testing.assert_allclose(out, step(params, config, x[0], zero)[0], rtol=0, atol=0)


def test_sampling_step_in_float32_stays_float32():
    model = CharLSTM(ModelConfig(vocab_size=8, hidden_size=5, num_layers=2), seed=0)
    logits, (h, c) = step(model.params, model.config, np.array([1, 2]), None)
    assert logits.dtype == h.dtype == c.dtype == np.float32
    assert logits.shape == (2, 8) and h.shape == c.shape == (2, 2, 5)


def test_one_hot_scatter_kernel_matches_numpy(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, size=(5, 3))
    x[0, 0] = 5  # the largest id occurs
    dxw = rng.normal(size=(5, 3, 8))
    W_ih = np.zeros((8, 7))  # id 6 never occurs: its column must stay zero
    fast = layers.input_projection_backward(dxw, x, W_ih)
    monkeypatch.setattr(layers, "scatter_add_rows", None)
    ref = layers.input_projection_backward(dxw, x, W_ih)
    assert fast[0] is None and ref[0] is None
    np.testing.assert_allclose(fast[1], ref[1], rtol=1e-14, atol=1e-15)
    np.testing.assert_array_equal(fast[1][:, 6], 0.0)
    np.testing.assert_allclose(fast[2], ref[2], rtol=0, atol=0)


def test_numba_kernels_exist_for_both_dtypes():
    assert set(KERNELS) == {np.dtype(np.float32), np.dtype(np.float64)}
    assert lstm.BACKEND in BACKENDS

