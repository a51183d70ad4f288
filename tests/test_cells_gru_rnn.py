"""The GRU and tanh-RNN cells get the LSTM's proofs: naive reference, finite
differences, chunked == whole window, and PyTorch parity (nn.GRU / nn.RNN)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_cells import naive_lm_forward
from torch_oracle import torch_loss_and_grads

from charlstm import CharLSTM, ModelConfig, cli, layers
from charlstm.cells import CELLS, gru, rnn
from charlstm.gradcheck import check_gradients, numeric_gradient, random_problem, relative_error
from charlstm.model import backward, forward

CELL_NAMES = ["gru", "rnn"]
CASES = [(c, *rest) for c in CELL_NAMES
         for rest in itertools.product([1, 2, 5], [1, 3], [1, 2], [False, True])
         if not (rest[2] == 1 and rest[3])]  # dropout needs L >= 2


def test_registered_with_torch_layouts():
    assert CELLS["gru"] is gru and CELLS["rnn"] is rnn
    assert (gru.GATES, gru.STATE_NAMES) == (3, ("h",))
    assert (rnn.GATES, rnn.STATE_NAMES) == (1, ("h",))


@pytest.mark.parametrize("cell,T,B,L,use_dropout", CASES)
def test_fused_forward_matches_naive_reference(cell, T, B, L, use_dropout):
    config = ModelConfig(vocab_size=6, hidden_size=4, num_layers=L, dropout=0.4, cell=cell)
    params, x, y, state, masks = random_problem(config, T, B, seed=T * 100 + B * 10 + L,
                                                dropout_mask=use_dropout)
    logits, (hT,), _ = forward(params, config, x, state, masks)
    ref_logits, ref_h = naive_lm_forward(params, cell, x, state[0], L, masks)
    np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=1e-12)
    np.testing.assert_allclose(hT, ref_h, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell,T,B,L,use_dropout", CASES)
def test_gradient_check_every_parameter_and_initial_state(cell, T, B, L, use_dropout):
    config = ModelConfig(vocab_size=5, hidden_size=4, num_layers=L, dropout=0.3, cell=cell)
    params, x, y, state, masks = random_problem(config, T, B, seed=7 + T + B + L,
                                                dropout_mask=use_dropout)
    rows = check_gradients(params, config, x, y, state, masks)
    assert {r.name for r in rows} == set(params) | {"state.h0"}
    for row in rows:
        assert row.max_rel_error < 1e-7, row
        assert row.max_abs_grad > 0.0, row


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_gradient_check_catches_a_wrong_backward(cell, monkeypatch):
    config = ModelConfig(vocab_size=5, hidden_size=4, num_layers=1, cell=cell)
    problem = random_problem(config, 3, 2, seed=1)
    module = CELLS[cell]
    original = module.backward

    def broken(dhs, dstateT, cache):
        dxw, dstate0, dW_hh, db_hh = original(dhs, dstateT, cache)
        return dxw, dstate0, dW_hh * 1.001, db_hh

    monkeypatch.setattr(module, "backward", broken)
    rows = {r.name: r.max_rel_error for r in check_gradients(problem[0], config, *problem[1:])}
    assert rows[f"{cell}.weight_hh_l0"] > 1e-4
    assert rows[f"{cell}.weight_ih_l0"] < 1e-7


@pytest.mark.parametrize("cell,L", [("gru", 1), ("gru", 2), ("rnn", 1), ("rnn", 3)])
def test_whole_window_equals_step_by_step_and_two_chained_halves(cell, L):
    config = ModelConfig(vocab_size=7, hidden_size=6, num_layers=L, cell=cell)
    params, x, y, state, _ = random_problem(config, 8, 3, seed=3)
    T = x.shape[0]
    logits, final, cache = forward(params, config, x, state)
    _, dlogits = layers.softmax_cross_entropy(logits, y)
    grads, dstate0 = backward(dlogits, None, cache)

    s, step_logits = state, []
    for t in range(T):
        out, s, _ = forward(params, config, x[t:t + 1], s)
        step_logits.append(out[0])
    np.testing.assert_allclose(np.stack(step_logits), logits, rtol=0, atol=1e-13)
    np.testing.assert_allclose(s[0], final[0], rtol=0, atol=1e-13)

    # Two halves chained through the state (forward) and its gradient (backward);
    # each half's mean loss is rescaled to its share of the whole window's mean.
    k = 3
    logits1, mid, cache1 = forward(params, config, x[:k], state)
    logits2, final2, cache2 = forward(params, config, x[k:], mid)
    _, d1 = layers.softmax_cross_entropy(logits1, y[:k])
    _, d2 = layers.softmax_cross_entropy(logits2, y[k:])
    g2, dmid = backward(d2 * (T - k) / T, None, cache2)
    g1, dstate0_chained = backward(d1 * k / T, dmid, cache1)
    np.testing.assert_allclose(np.concatenate([logits1, logits2]), logits, rtol=0, atol=1e-13)
    np.testing.assert_allclose(final2[0], final[0], rtol=0, atol=1e-13)
    for name in params:
        np.testing.assert_allclose(g1[name] + g2[name], grads[name], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(dstate0_chained[0], dstate0[0], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_final_state_gradient_is_used(cell):
    """Gradient of loss + <w, hT> (a stand-in for the next window) vs finite differences."""
    config = ModelConfig(vocab_size=4, hidden_size=3, num_layers=2, cell=cell)
    params, x, y, state, _ = random_problem(config, 3, 2, seed=11)
    w = (np.random.default_rng(0).normal(size=state[0].shape),)

    def total():
        logits, final, _ = forward(params, config, x, state)
        return layers.softmax_cross_entropy(logits, y)[0] + float((w[0] * final[0]).sum())

    logits, _, cache = forward(params, config, x, state)
    _, dlogits = layers.softmax_cross_entropy(logits, y)
    grads, dstate0 = backward(dlogits, w, cache)
    for name, value in params.items():
        assert relative_error(grads[name], numeric_gradient(total, value)) < 1e-7, name
    assert relative_error(dstate0[0], numeric_gradient(total, state[0])) < 1e-7


sizes = st.tuples(st.sampled_from(CELL_NAMES), st.integers(2, 40), st.integers(1, 24),
                  st.integers(1, 3), st.integers(1, 12), st.integers(1, 5),
                  st.integers(0, 2**31 - 1))
TOL = {np.float64: dict(rtol=1e-10, atol=1e-10), np.float32: dict(rtol=2e-4, atol=2e-5)}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=20, deadline=None)
@given(sizes=sizes)
def test_matches_torch_autograd(dtype, sizes):
    cell, V, H, L, T, B, seed = sizes
    config = ModelConfig(vocab_size=V, hidden_size=H, num_layers=L, cell=cell)
    model = CharLSTM(config, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, V, size=(T, B)), rng.integers(0, V, size=(T, B))
    state = (rng.normal(0, 0.5, (L, B, H)).astype(dtype),)
    logits, final, cache = forward(model.params, config, x, state)
    loss, dlogits = layers.softmax_cross_entropy(logits, y)
    grads, dstate0 = backward(dlogits, None, cache)
    t_loss, t_logits, t_final, t_grads, t_dstate0 = torch_loss_and_grads(
        model.params, cell, L, x, y, state)
    tol = TOL[dtype]
    assert loss == pytest.approx(t_loss, rel=tol["rtol"] * 10, abs=tol["atol"])
    np.testing.assert_allclose(logits, t_logits, **tol)
    np.testing.assert_allclose(final[0], t_final[0], **tol)
    assert set(grads) == set(t_grads) == set(model.params)
    for name in model.params:
        np.testing.assert_allclose(grads[name], t_grads[name], err_msg=name, **tol)
    np.testing.assert_allclose(dstate0[0], t_dstate0[0], **tol)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_state_dict_loads_into_torch_unchanged(cell):
    model = CharLSTM(ModelConfig(vocab_size=11, hidden_size=7, num_layers=2, cell=cell), seed=0)
    module = {"gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell](11, 7, 2)
    sd = {k.removeprefix(cell + "."): torch.from_numpy(v) for k, v in model.params.items()
          if k.startswith(cell + ".")}
    assert set(sd) == set(module.state_dict())
    module.load_state_dict(sd, strict=True)


def test_init_bias_gru_update_gate_and_rnn_untouched():
    H = 16
    bound = 1 / np.sqrt(H)
    for fb in (0.0, 1.0):
        p = CharLSTM(ModelConfig(vocab_size=10, hidden_size=H, num_layers=2, cell="gru",
                                 forget_bias=fb), seed=3, dtype=np.float64).params
        for k in range(2):
            b = p[f"gru.bias_ih_l{k}"]
            assert np.all(np.abs(b[H:2 * H] - fb) <= bound)  # z block shifted by forget_bias
            assert np.all(np.abs(np.r_[b[:H], b[2 * H:]]) <= bound)
            assert np.all(np.abs(p[f"gru.bias_hh_l{k}"]) <= bound)
    p0 = CharLSTM(ModelConfig(vocab_size=10, hidden_size=H, cell="rnn", forget_bias=0.0),
                  seed=3).params
    p1 = CharLSTM(ModelConfig(vocab_size=10, hidden_size=H, cell="rnn", forget_bias=1.0),
                  seed=3).params
    assert all(np.array_equal(p0[k], p1[k]) for k in p0)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_float32_throughout_and_overfits_a_short_string(cell):
    text = "hello world, hello gru and rnn. "
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in text])
    x, y = ids[:-1, None], ids[1:, None]
    model = CharLSTM(ModelConfig(vocab_size=len(chars), hidden_size=32, num_layers=1,
                                 cell=cell), seed=0)
    from charlstm.optim import make_optimizer
    opt = make_optimizer("adam", model.params, lr=1e-2)
    losses = []
    for _ in range(300):
        loss, grads, state = model.loss_and_grads(x, y)
        assert all(g.dtype == np.float32 for g in grads.values())
        assert state[0].dtype == np.float32
        opt.step(model.params, grads)
        losses.append(loss)
    assert losses[0] > 2.0
    assert losses[-1] < 0.05


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_gradcheck_command_takes_the_cell(cell, capsys):
    rc = cli.main(["gradcheck", "--cell", cell, "--hidden-size", "3", "--seq-len", "3",
                   "--batch-size", "2", "--vocab-size", "4"])
    out = capsys.readouterr().out
    assert rc == 0 and "PASS" in out
    for name in [f"{cell}.weight_ih_l0", f"{cell}.weight_hh_l1", "state.h0"]:
        assert name in out
    assert "state.c0" not in out
