"""AR and TAR (AWD-LSTM's activation penalties), proven like the cells.

Proofs: the vectorised penalty equals a naive element-by-element loop and its own
finite differences; the whole model's gradient of cross-entropy + AR + TAR passes a
float64 finite-difference check w.r.t. every parameter and the initial state, and
matches PyTorch autograd; a window cut in two with the state (and its gradient)
carried pays and differentiates exactly as the whole; two engine workers compute
what one does; training logs the penalty apart from the loss.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from reference import naive_activation_penalty

from charlstm import ModelConfig, engine, session
from charlstm.config import TrainConfig
from charlstm.gradcheck import numeric_gradient, random_problem, relative_error
from charlstm.model import loss_and_grads
from charlstm.penalties import Penalty, activation_penalty

CELLS = ["lstm", "gru", "rnn"]
# large weights, so that the penalties' part of each gradient is not lost in the loss's
PENALTY = Penalty(ar=3.0, tar=5.0)


def test_penalty_equals_the_naive_loop_and_its_finite_differences():
    rng = np.random.default_rng(0)
    h, h0 = rng.normal(size=(4, 3, 5)), rng.normal(size=(3, 5))
    value, dh, dh0 = activation_penalty(h, h0, PENALTY)
    assert value == pytest.approx(naive_activation_penalty(h, h0, *PENALTY), rel=1e-13)
    for array, grad in ((h, dh), (h0, dh0)):
        numeric = numeric_gradient(lambda: activation_penalty(h, h0, PENALTY)[0], array)
        assert relative_error(grad, numeric) < 1e-10
    # count: a slice of a batch divides by the whole batch's T*B, so slices sum to it
    parts = [activation_penalty(h[:, s], h0[s], PENALTY, count=4 * 3)
             for s in (slice(0, 1), slice(1, 3))]
    assert sum(p[0] for p in parts) == pytest.approx(value, rel=1e-13)
    np.testing.assert_allclose(np.concatenate([p[1] for p in parts], axis=1), dh, rtol=1e-13)
    assert not Penalty() and Penalty(ar=1.0) and Penalty(tar=1.0)


def _problem(cell, L=2, T=4, B=3, seed=0):
    config = ModelConfig(vocab_size=5, hidden_size=3, num_layers=L, dropout=0.3, cell=cell)
    return config, *random_problem(config, T, B, seed, dropout_mask=True)


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_with_ar_and_tar_match_finite_differences(cell):
    config, params, x, y, state, masks = _problem(cell)

    def objective() -> float:
        wg = loss_and_grads(params, config, x, y, state, masks, penalty=PENALTY)
        return wg.loss + wg.penalty

    wg = loss_and_grads(params, config, x, y, state, masks, penalty=PENALTY)
    plain = loss_and_grads(params, config, x, y, state, masks)
    assert wg.loss == plain.loss and wg.penalty > 0.01 and plain.penalty == 0.0
    for name, value in params.items():
        assert relative_error(wg.grads[name], numeric_gradient(objective, value)) < 1e-8, name
    for s, ds in zip(state, wg.dstate0):
        assert relative_error(ds, numeric_gradient(objective, s)) < 1e-8


@pytest.mark.parametrize("cell", CELLS)
def test_ar_and_tar_match_torch_autograd(cell, torch_oracle):
    config, params, x, y, state, masks = _problem(cell, L=2, T=5, B=2, seed=1)
    wg = loss_and_grads(params, config, x, y, state, masks, penalty=PENALTY)
    t_loss, _, _, t_grads, t_dstate0 = torch_oracle.torch_loss_and_grads(
        params, cell, config.num_layers, x, y, state, masks, *PENALTY)
    assert wg.loss + wg.penalty == pytest.approx(t_loss, rel=1e-12)
    for name in params:
        np.testing.assert_allclose(wg.grads[name], t_grads[name], rtol=1e-9, atol=1e-12,
                                   err_msg=name)
    for a, b in zip(wg.dstate0, t_dstate0):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_two_chained_halves_equal_the_whole_window(cell):
    """TAR's first difference in a window uses the carried state's top h, so a window
    cut at k, both halves dividing by the whole window's T*B, pays the whole window's
    loss and penalty, and with dL/d(mid state) carried back gives its gradients."""
    config, params, x, y, state, masks = _problem(cell, L=2, T=7, B=2, seed=2)
    T, B = x.shape
    whole = loss_and_grads(params, config, x, y, state, masks, penalty=PENALTY)
    k = 3

    def half(a, b, s, dstate=None):
        return loss_and_grads(params, config, x[a:b], y[a:b], s, [m[a:b] for m in masks],
                              dstate, count=T * B, penalty=PENALTY)

    first_free = half(0, k, state)
    second = half(k, T, first_free.state)
    first = half(0, k, state, second.dstate0)
    assert first.loss + second.loss == pytest.approx(whole.loss, rel=1e-13)
    assert first.penalty + second.penalty == pytest.approx(whole.penalty, rel=1e-13)
    for name in params:
        np.testing.assert_allclose(first.grads[name] + second.grads[name], whole.grads[name],
                                   rtol=1e-10, atol=1e-14, err_msg=name)
    for a, b in zip(first.dstate0 + second.state, whole.dstate0 + whole.state):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("cell", CELLS)
def test_two_engine_workers_equal_one(cell, monkeypatch):
    monkeypatch.setattr(engine, "fewest_streams", lambda H: 1)
    config, params, x, y, state, masks = _problem(cell, B=5, seed=3)
    serial = engine.loss_and_grads(params, config, x, y, state, masks, threads=1,
                                   penalty=PENALTY)
    two = engine.loss_and_grads(params, config, x, y, state, masks, threads=2,
                                penalty=PENALTY)
    assert two.loss == pytest.approx(serial.loss, rel=1e-12)
    assert two.penalty == pytest.approx(serial.penalty, rel=1e-12) and serial.penalty > 0
    for name in params:
        np.testing.assert_allclose(two.grads[name], serial.grads[name], rtol=1e-12,
                                   atol=1e-14, err_msg=name)
    for a, b in zip(two.dstate0, serial.dstate0):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_training_logs_the_penalty_apart_from_the_loss(tmp_path):
    from test_train import tiny_config
    runs = {}
    for name, kw in (("plain", {}), ("penalised", dict(ar=2.0, tar=1.0))):
        session.start_training(tiny_config(tmp_path, name, max_steps=2, log_every=1, **kw))
        runs[name] = [json.loads(line) for line in (tmp_path / name / "log.jsonl").open()]
    plain, penalised = runs["plain"], runs["penalised"]
    assert "train_penalty" not in plain[0] and penalised[0]["train_penalty"] > 0
    # the logged loss is the cross-entropy: the same at step 1 (same weights and data),
    # different at step 2 (the penalty's gradient changed the first update)
    assert penalised[0]["train_loss"] == plain[0]["train_loss"]
    assert penalised[1]["train_loss"] != plain[1]["train_loss"]
    for bad in (dict(ar=-1.0), dict(tar=float("nan"))):
        with pytest.raises(ValueError, match="must be a finite number >= 0"):
            TrainConfig(**bad)
