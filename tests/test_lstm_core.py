"""Proofs for the LSTM core: reference forward, finite differences, chunking, learning."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from reference import naive_cross_entropy, naive_lm_forward

from charlstm import CharLSTM, ModelConfig, layers
from charlstm.cells import lstm
from charlstm.gradcheck import check_gradients, random_problem
from charlstm.model import backward, forward

GRADCHECK_CASES = list(itertools.product([1, 2, 5], [1, 3], [1, 2], [False, True]))


@pytest.mark.parametrize("T,B,L,use_dropout", GRADCHECK_CASES)
def test_fused_forward_matches_naive_reference(T, B, L, use_dropout):
    config = ModelConfig(vocab_size=6, hidden_size=4, num_layers=L, dropout=0.4)
    params, x, y, state, masks = random_problem(config, T, B, seed=T * 100 + B * 10 + L,
                                                dropout_mask=use_dropout)
    logits, (hT, cT), _ = forward(params, config, x, state, masks)
    ref_logits, ref_h, ref_c = naive_lm_forward(params, x, state[0], state[1], L, masks)
    np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=1e-12)
    np.testing.assert_allclose(hT, ref_h, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cT, ref_c, rtol=0, atol=1e-12)
    loss, _ = layers.softmax_cross_entropy(logits, y)
    assert loss == pytest.approx(naive_cross_entropy(ref_logits, y), abs=1e-12)


@pytest.mark.parametrize("T,B,L,use_dropout", GRADCHECK_CASES)
def test_gradient_check_every_parameter_and_initial_state(T, B, L, use_dropout):
    config = ModelConfig(vocab_size=5, hidden_size=4, num_layers=L, dropout=0.3)
    params, x, y, state, masks = random_problem(config, T, B, seed=7 + T + B + L,
                                                dropout_mask=use_dropout)
    rows = check_gradients(params, config, x, y, state, masks)
    names = {r.name for r in rows}
    assert names == set(params) | {"state.h0", "state.c0"}
    for row in rows:
        assert row.max_rel_error < 1e-7, row
        assert row.max_abs_grad > 0.0, row  # the check compared something non-trivial


def test_gradient_check_catches_a_wrong_backward(monkeypatch):
    """The check is not vacuous: break one derivative and it must fail."""
    config = ModelConfig(vocab_size=5, hidden_size=4, num_layers=1)
    problem = random_problem(config, 3, 2, seed=1)
    original = lstm.backward

    def broken(dhs, dstateT, cache):
        dxw, dstate0, dW_hh, db_hh = original(dhs, dstateT, cache)
        return dxw, dstate0, dW_hh * 1.001, db_hh

    monkeypatch.setattr(lstm, "backward", broken)
    rows = {r.name: r.max_rel_error for r in check_gradients(problem[0], config, *problem[1:])}
    assert rows["lstm.weight_hh_l0"] > 1e-4
    assert rows["lstm.weight_ih_l0"] < 1e-7


def _window_grads(params, config, x, y, state, dstate=None, scale=1.0):
    logits, final, cache = forward(params, config, x, state)
    loss, dlogits = layers.softmax_cross_entropy(logits, y)
    grads, dstate0 = backward(dlogits * scale, dstate, cache)
    return loss, logits, final, grads, dstate0


@pytest.mark.parametrize("L", [1, 3])
def test_whole_window_equals_step_by_step_and_two_chained_halves(L):
    config = ModelConfig(vocab_size=7, hidden_size=6, num_layers=L)
    params, x, y, state, _ = random_problem(config, 8, 3, seed=3)
    T = x.shape[0]
    loss, logits, final, grads, dstate0 = _window_grads(params, config, x, y, state)

    # Step by step: the state carried through T windows of length 1 gives the same logits.
    s = state
    step_logits = []
    for t in range(T):
        out, s, _ = forward(params, config, x[t:t + 1], s)
        step_logits.append(out[0])
    np.testing.assert_allclose(np.stack(step_logits), logits, rtol=0, atol=1e-13)
    for a, b in zip(s, final):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)

    # Two halves: forward carries the state, backward carries dL/d(state) from the second
    # half into the first. Each half's loss is a mean over half the positions, so its
    # gradient is scaled by 1/2 to match the mean over the whole window.
    k = T // 2
    logits1, mid, cache1 = forward(params, config, x[:k], state)
    logits2, final2, cache2 = forward(params, config, x[k:], mid)
    _, d2 = layers.softmax_cross_entropy(logits2, y[k:])
    _, d1 = layers.softmax_cross_entropy(logits1, y[:k])
    g2, dmid = backward(d2 * (T - k) / T, None, cache2)
    g1, dstate0_chained = backward(d1 * k / T, dmid, cache1)
    np.testing.assert_allclose(np.concatenate([logits1, logits2]), logits, rtol=0, atol=1e-13)
    for a, b in zip(final2, final):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)
    for name in params:
        np.testing.assert_allclose(g1[name] + g2[name], grads[name], rtol=1e-10, atol=1e-14)
    for a, b in zip(dstate0_chained, dstate0):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


def test_final_state_gradient_is_used():
    """dL/d(final state) from a following window changes every gradient consistently:
    the gradient of  loss + <w_h, hT> + <w_c, cT>  is checked against finite differences."""
    config = ModelConfig(vocab_size=4, hidden_size=3, num_layers=2)
    params, x, y, state, _ = random_problem(config, 3, 2, seed=11)
    rng = np.random.default_rng(0)
    w = tuple(rng.normal(size=s.shape) for s in state)

    def total():
        logits, final, _ = forward(params, config, x, state)
        return (layers.softmax_cross_entropy(logits, y)[0]
                + sum(float((a * b).sum()) for a, b in zip(w, final)))

    logits, _, cache = forward(params, config, x, state)
    _, dlogits = layers.softmax_cross_entropy(logits, y)
    grads, dstate0 = backward(dlogits, w, cache)
    from charlstm.gradcheck import numeric_gradient, relative_error
    for name, value in params.items():
        assert relative_error(grads[name], numeric_gradient(total, value)) < 1e-7, name
    for s, ds in zip(state, dstate0):
        assert relative_error(ds, numeric_gradient(total, s)) < 1e-7


def test_initial_loss_is_close_to_log_vocab():
    V = 65
    model = CharLSTM(ModelConfig(vocab_size=V, hidden_size=64, num_layers=2), seed=0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, size=(50, 8))
    y = rng.integers(0, V, size=(50, 8))
    loss, _, _ = model.loss_and_grads(x, y)
    assert abs(loss - np.log(V)) < 0.05


def test_overfits_a_short_string():
    text = "hello world, hello lstm. "
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in text])
    x, y = ids[:-1, None], ids[1:, None]
    model = CharLSTM(ModelConfig(vocab_size=len(chars), hidden_size=32, num_layers=1),
                     seed=0, dtype=np.float64)
    m = {k: np.zeros_like(v) for k, v in model.params.items()}
    v = {k: np.zeros_like(v) for k, v in model.params.items()}
    lr, b1, b2 = 1e-2, 0.9, 0.999
    first = None
    for step in range(1, 301):
        loss, grads, _ = model.loss_and_grads(x, y)
        first = loss if first is None else first
        for k in model.params:  # plain Adam, written out so this test stands alone
            m[k] = b1 * m[k] + (1 - b1) * grads[k]
            v[k] = b2 * v[k] + (1 - b2) * grads[k] ** 2
            mhat, vhat = m[k] / (1 - b1 ** step), v[k] / (1 - b2 ** step)
            model.params[k] -= lr * mhat / (np.sqrt(vhat) + 1e-8)
    assert first > 2.0
    assert loss < 0.02


def test_dtype_float32_throughout():
    model = CharLSTM(ModelConfig(vocab_size=9, hidden_size=8, num_layers=2), seed=0)
    x = np.zeros((4, 2), dtype=np.int64)
    logits, state = model.forward(x)
    loss, grads, _ = model.loss_and_grads(x, x)
    assert logits.dtype == np.float32
    assert all(s.dtype == np.float32 for s in state)
    assert all(g.dtype == np.float32 for g in grads.values())
    assert set(grads) == set(model.params)
    assert all(grads[k].shape == model.params[k].shape for k in grads)


def test_forget_bias_and_init_range():
    H = 16
    config = ModelConfig(vocab_size=10, hidden_size=H, num_layers=2, forget_bias=1.0)
    p = CharLSTM(config, seed=3, dtype=np.float64).params
    bound = 1 / np.sqrt(H)
    for name, value in p.items():
        if name.startswith("lstm.bias_ih"):
            forget = value[H:2 * H]
            assert np.all((forget >= 1 - bound) & (forget <= 1 + bound))
            others = np.r_[value[:H], value[2 * H:]]
            assert np.all(np.abs(others) <= bound)
        else:
            assert np.all(np.abs(value) <= bound), name
    same = CharLSTM(config, seed=3, dtype=np.float64).params
    assert all(np.array_equal(p[k], same[k]) for k in p)


def test_bad_ids_are_rejected():
    model = CharLSTM(ModelConfig(vocab_size=5, hidden_size=4), seed=0)
    with pytest.raises(ValueError, match="ids"):
        model.forward(np.array([[5]]))
    with pytest.raises(ValueError, match="integer"):
        model.forward(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ValueError):
        ModelConfig(vocab_size=0)
    with pytest.raises(ValueError):
        ModelConfig(vocab_size=3, dropout=1.0)
