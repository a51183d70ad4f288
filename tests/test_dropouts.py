"""AWD-LSTM's dropouts (Merity, Keskar & Socher 2017), proven as the cells are:
DropConnect on every W_hh, locked (variational) dropout on every layer's output, and
input-character dropout, each with one mask per window.

Proofs, every cell, with every mask on at once (and torch.nn.LSTM's per-step dropout
too): the fast path equals a naive reference (explicitly masked gate blocks, a masked
one-hot input, a per-step loop); float64 central differences agree with the gradient
of every parameter and of the initial state; PyTorch autograd through weight * mask
and a broadcast locked mask gives the same numbers; a window chunked in two with the
carried state and the same masks equals the whole; two engine workers equal one; the
masks never act outside training; a model trained through them still learns; a run
with all three resumes bit-identically.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import naive_lm_forward

from charlstm import CharLSTM, ModelConfig, engine, pool, session
from charlstm.cells import CELLS
from charlstm.evaluate import evaluate
from charlstm.gradcheck import check_gradients, numeric_gradient, random_problem, relative_error
from charlstm.model import (
    drop_weights,
    forward,
    loss_and_grads,
    make_dropout_masks,
    make_weight_masks,
    step,
)
from charlstm.optim import make_optimizer
from charlstm.penalties import Penalty

NAMES = list(CELLS)
RATES = dict(weight_dropout=0.4, locked_dropout=0.3, input_dropout=0.35)
# large weights, so that the penalties' part of each gradient is not lost in the loss's
PENALTY = Penalty(ar=3.0, tar=5.0)


def problem(cell, L, T=4, B=3, V=7, H=5, seed=0, dropout=0.25, **rates):
    """float64 params, ids, a non-zero state, and every mask the config asks for."""
    config = ModelConfig(vocab_size=V, hidden_size=H, num_layers=L, dropout=dropout,
                         cell=cell, **(rates or RATES))
    params, x, y, state, masks = random_problem(config, T, B, seed, dropout_mask=True)
    weight_masks = make_weight_masks(config, np.random.default_rng(seed + 1), np.float64)
    return config, params, x, y, state, masks, weight_masks


# ----------------------------------------------------------------------------- masks

def test_mask_shapes_values_and_draws():
    """Locked masks are (1, B, H) on every layer, the top one included; with per-step
    dropout too, the lower layers' masks are the (T, B, H) products; weight masks are
    (G, H) per W_hh and (1, V) on weight_ih_l0; entries are 0 or 1/(1-p)."""
    config = ModelConfig(vocab_size=9, hidden_size=6, num_layers=3, dropout=0.5,
                         locked_dropout=0.25, weight_dropout=0.5, input_dropout=0.2)
    rng = np.random.default_rng(0)
    masks = make_dropout_masks(config, 5, 4, rng, np.float32)
    assert [m.shape for m in masks] == [(5, 4, 6), (5, 4, 6), (1, 4, 6)]
    assert set(np.unique(masks[2])) <= {0.0, np.float32(1 / 0.75)}
    assert all(m.dtype == np.float32 for m in masks)
    weights = make_weight_masks(config, rng, np.float32)
    assert {k: v.shape for k, v in weights.items()} == {
        "lstm.weight_hh_l0": (24, 6), "lstm.weight_hh_l1": (24, 6),
        "lstm.weight_hh_l2": (24, 6), "lstm.weight_ih_l0": (1, 9)}
    assert set(np.unique(weights["lstm.weight_ih_l0"])) <= {0.0, np.float32(1 / 0.8)}
    big = make_weight_masks(ModelConfig(vocab_size=200, hidden_size=100, weight_dropout=0.3),
                            rng, np.float64)["lstm.weight_hh_l0"]
    assert abs((big == 0).mean() - 0.3) < 0.01 and abs(big.mean() - 1.0) < 0.02
    off = ModelConfig(vocab_size=9, hidden_size=6, num_layers=2)
    assert make_dropout_masks(off, 5, 4, rng, np.float32) is None
    assert make_weight_masks(off, rng, np.float32) is None


def test_without_the_new_rates_the_dropout_stream_is_unchanged():
    """Old runs resume as before: torch-style dropout alone draws exactly what it did
    (its L-1 masks first), and a zero rate draws nothing."""
    config = ModelConfig(vocab_size=9, hidden_size=6, num_layers=3, dropout=0.5)
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    masks = make_dropout_masks(config, 5, 4, a, np.float32)
    assert make_weight_masks(config, a, np.float32) is None
    for m in masks[:2]:
        np.testing.assert_array_equal(m, (b.random((5, 4, 6)) >= 0.5).astype(np.float32) * 2)
    assert len(masks) == 2
    assert a.bit_generator.state == b.bit_generator.state


# ----------------------------------------------------------------------------- proofs

@pytest.mark.parametrize("cell", NAMES)
@pytest.mark.parametrize("L", [1, 2])
def test_fast_path_matches_naive_reference_with_every_mask(cell, L):
    config, params, x, y, state, masks, weight_masks = problem(cell, L, seed=L)
    loss, _, final, _, _ = loss_and_grads(params, config, x, y, state, masks,
                                       weight_masks=weight_masks)
    logits, _, _ = forward(drop_weights(params, weight_masks), config, x, state, masks)
    ref_logits, ref_final = naive_lm_forward(params, cell, x, state, L, masks, weight_masks)
    np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=1e-12)
    for a, b in zip(final, ref_final, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    # the masks matter: without them the logits differ
    assert not np.allclose(forward(params, config, x, state)[0], ref_logits)


@pytest.mark.parametrize("cell", NAMES)
@pytest.mark.parametrize("L", [1, 2])
def test_gradient_check_with_every_mask(cell, L):
    config, params, x, y, state, masks, weight_masks = problem(cell, L, T=3, B=2, seed=5 + L)
    rows = check_gradients(params, config, x, y, state, masks, weight_masks=weight_masks)
    assert len(rows) == len(params) + len(CELLS[cell].STATE_NAMES)
    for row in rows:
        assert row.max_rel_error < 1e-7, row
        assert row.max_abs_grad > 0.0, row
    # a dropped weight gets no gradient; a dropped character's column neither
    grads = loss_and_grads(params, config, x, y, state, masks,
                           weight_masks=weight_masks).grads
    for name, mask in weight_masks.items():
        assert (mask == 0).any() and not np.broadcast_to(grads[name], params[name].shape)[
            np.broadcast_to(mask == 0, params[name].shape)].any(), name


@pytest.mark.parametrize("cell", NAMES)
@pytest.mark.parametrize("L", [1, 3])
@pytest.mark.parametrize("penalty", [Penalty(), PENALTY])
def test_torch_autograd_through_the_masks(cell, L, penalty, torch_oracle):
    """torch runs on weight * mask (functional_call) and multiplies each layer's output
    by the broadcast locked mask; autograd's chain rule through the masks is ours. With
    AR and TAR, which read the top layer's output before its mask."""
    config, params, x, y, state, masks, weight_masks = problem(cell, L, T=6, B=3, V=11,
                                                               H=8, seed=10 + L)
    wg = loss_and_grads(params, config, x, y, state, masks, penalty=penalty,
                        weight_masks=weight_masks)
    t_loss, _, t_final, t_grads, t_dstate0 = torch_oracle.torch_loss_and_grads(
        params, cell, L, x, y, state, masks, *penalty, weight_masks=weight_masks)
    assert wg.loss + wg.penalty == pytest.approx(t_loss, rel=1e-12)
    assert (wg.penalty > 0) == bool(penalty)
    for name in params:
        np.testing.assert_allclose(wg.grads[name], t_grads[name], rtol=1e-9, atol=1e-12,
                                   err_msg=name)
    for a, b in zip(wg.state + wg.dstate0, t_final + t_dstate0, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("cell", NAMES)
def test_penalties_with_every_mask_match_finite_differences(cell):
    """Cross-entropy + AR + TAR with every mask on: the top layer's mask scales what the
    decoder reads, never what the penalties read."""
    config, params, x, y, state, masks, weight_masks = problem(cell, 2, T=3, B=2, seed=8)

    def run(out_masks=masks):
        return loss_and_grads(params, config, x, y, state, out_masks, penalty=PENALTY,
                              weight_masks=weight_masks)

    def objective() -> float:
        wg = run()
        return wg.loss + wg.penalty

    wg = run()
    assert run([*masks[:-1], np.ones_like(masks[-1])]).penalty == wg.penalty
    for name, value in params.items():
        assert relative_error(wg.grads[name], numeric_gradient(objective, value)) < 1e-8, name
    for s, ds in zip(state, wg.dstate0):
        assert relative_error(ds, numeric_gradient(objective, s)) < 1e-8


def _time_slice(masks, a, b):
    """Steps a:b of the output masks; a locked (1, B, H) mask is the same at every step."""
    return [m if len(m) == 1 else m[a:b] for m in masks]


@pytest.mark.parametrize("cell", NAMES)
def test_two_chained_halves_equal_the_whole_window(cell):
    """One window's masks, cut in two with the state (forward) and its gradient
    (backward) carried across: the whole window's loss and gradients (the weighting of
    the halves' means is test_cells' two-halves test's)."""
    config, params, x, y, state, masks, weight_masks = problem(cell, 2, T=7, B=3, seed=2)
    T, k = len(x), 3
    loss, grads, final, dstate0, _ = loss_and_grads(params, config, x, y, state, masks,
                                                    weight_masks=weight_masks)
    first, second = _time_slice(masks, 0, k), _time_slice(masks, k, T)
    _, _, mid, _, _ = loss_and_grads(params, config, x[:k], y[:k], state, first,
                                  weight_masks=weight_masks)
    loss2, g2, final2, dmid, _ = loss_and_grads(params, config, x[k:], y[k:], mid, second,
                                                weight_masks=weight_masks)
    loss1, g1, _, d0, _ = loss_and_grads(params, config, x[:k], y[:k], state, first,
                                         dstate=tuple(d * (T - k) / k for d in dmid),
                                         weight_masks=weight_masks)
    assert loss == pytest.approx((k * loss1 + (T - k) * loss2) / T, rel=1e-13)
    for a, b in zip(final2, final):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)
    for name in params:
        np.testing.assert_allclose(k / T * g1[name] + (T - k) / T * g2[name], grads[name],
                                   rtol=1e-10, atol=1e-14)
    for a, b in zip(d0, dstate0):
        np.testing.assert_allclose(k / T * a, b, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("cell", NAMES)
def test_two_workers_equal_one_with_every_mask(cell, dtype, tol, monkeypatch):
    """B = 7 split over 2 workers (uneven slices): the weights are masked once for both,
    each slice takes its streams' locked masks, and the sum is masked once."""
    monkeypatch.setattr(engine, "fewest_streams", lambda H: 1)
    config, params, x, y, state, masks, weight_masks = problem(cell, 2, T=5, B=7, seed=4)
    cast = lambda a: a.astype(dtype)  # noqa: E731
    params = {k: cast(v) for k, v in params.items()}
    state, masks = tuple(map(cast, state)), [cast(m) for m in masks]
    weight_masks = {k: cast(v) for k, v in weight_masks.items()}
    one = engine.loss_and_grads(params, config, x, y, state, masks, threads=1,
                                weight_masks=weight_masks)
    two = engine.loss_and_grads(params, config, x, y, state, masks, threads=2,
                                weight_masks=weight_masks)
    assert two.loss == pytest.approx(one.loss, rel=tol)
    for name in params:
        np.testing.assert_allclose(two.grads[name], one.grads[name], rtol=tol, atol=tol,
                                   err_msg=name)
    for a, b in zip(two.state + two.dstate0, one.state + one.dstate0):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


# ----------------------------------------------------------------------------- use

def test_masks_act_only_in_training():
    """Evaluation, sampling and train=False run the stored weights, unmasked: a model
    with every rate set computes exactly what the same weights without them do."""
    plain = CharLSTM(ModelConfig(vocab_size=8, hidden_size=6, num_layers=2), seed=1)
    config = ModelConfig(vocab_size=8, hidden_size=6, num_layers=2, dropout=0.3, **RATES)
    regular = CharLSTM(config, params=plain.params)
    x = np.random.default_rng(0).integers(0, 8, size=(6, 3))
    (logits, final), (plain_logits, plain_final) = regular.forward(x), plain.forward(x)
    assert np.array_equal(logits, plain_logits)
    assert all(np.array_equal(a, b) for a, b in zip(final, plain_final, strict=True))
    assert regular.loss_and_grads(x, x, train=False)[0] == plain.loss_and_grads(
        x, x, train=False)[0]
    ids = np.concatenate([x[:, 0], x[:, 1]])
    assert evaluate(regular.params, config, ids, 2, 4) == evaluate(
        plain.params, plain.config, ids, 2, 4)
    assert np.array_equal(step(regular.params, config, x[0])[0],
                          step(plain.params, plain.config, x[0])[0])
    # and in training they act, drawn from the model's generator
    trained = regular.loss_and_grads(x, x)
    assert trained[0] != regular.loss_and_grads(x, x, train=False)[0]


def test_loss_and_grads_draws_every_mask_from_its_generator():
    config = ModelConfig(vocab_size=8, hidden_size=6, num_layers=2, dropout=0.2, **RATES)
    net = CharLSTM(config, seed=0, dtype=np.float64)
    x = np.random.default_rng(1).integers(0, 8, size=(5, 2))
    ours = net.loss_and_grads(x, x, rng=np.random.default_rng(9))
    rng = np.random.default_rng(9)
    masks = make_dropout_masks(config, 5, 2, rng, np.float64)
    expected = loss_and_grads(net.params, config, x, x, None, masks,
                              weight_masks=make_weight_masks(config, rng, np.float64))
    assert ours[0] == expected.loss
    assert all(np.array_equal(ours[1][k], expected.grads[k]) for k in net.params)


def test_exact_resume_with_every_dropout(tmp_path, monkeypatch):
    """Stopped by a signal after 7 of 16 steps and resumed: bit-identical to a run that
    never stopped, with all three dropouts (and torch-style dropout) on, on two workers."""
    from test_train import _final_arrays, _stop_by_signal_after, tiny_config

    settings = dict(batch_size=3, **RATES)
    monkeypatch.setattr(engine, "fewest_streams", lambda H: 1)
    pool.set_num_threads(2)
    try:
        straight = session.start_training(tiny_config(tmp_path, "a", **settings))
        plain = session.start_training(tiny_config(tmp_path, "plain", batch_size=3))
        _stop_by_signal_after(monkeypatch, 7)
        first = session.start_training(tiny_config(tmp_path, "resumed", **settings))
        assert first.interrupted and first.step == 7
        monkeypatch.undo()
        monkeypatch.setattr(engine, "fewest_streams", lambda H: 1)
        second = session.resume_training(tmp_path / "resumed")
    finally:
        pool.set_num_threads(None)
    assert second.step == straight.step == 16
    assert second.val_loss == straight.val_loss != plain.val_loss
    a, meta = _final_arrays(tmp_path / "a")
    b, _ = _final_arrays(tmp_path / "resumed")
    assert set(a) == set(b) and all(a[k].tobytes() == b[k].tobytes() for k in a)
    from charlstm.checkpoint import load_checkpoint
    stored = load_checkpoint(tmp_path / "a/last.safetensors")
    assert {k: getattr(stored.config, k) for k in RATES} == RATES
    assert all(stored.meta["train_config"][k] == v for k, v in RATES.items())


def test_a_model_trained_with_every_dropout_still_learns():
    """Training through the masks fits a short string; evaluated unmasked, it predicts it."""
    text = "hello world, hello lstm, gru and rnn. "
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in text])
    x, y = ids[:-1, None].repeat(4, axis=1), ids[1:, None].repeat(4, axis=1)
    config = ModelConfig(vocab_size=len(chars), hidden_size=32, weight_dropout=0.2,
                         locked_dropout=0.1, input_dropout=0.05)
    net = CharLSTM(config, seed=0)
    opt = make_optimizer("adam", net.params, lr=1e-2)
    start = net.loss_and_grads(x, y, train=False)[0]
    for _ in range(300):
        opt.step(net.params, net.loss_and_grads(x, y)[1])
    assert start > 2.0 and net.loss_and_grads(x, y, train=False)[0] < 0.3
