"""PyTorch parity: the same weights in torch.nn.LSTM + nn.Linear give the same numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_oracle import torch_loss_and_grads

from charlstm import CharLSTM, ModelConfig, layers
from charlstm.model import backward, forward

TOL = {np.float64: dict(rtol=1e-10, atol=1e-10), np.float32: dict(rtol=2e-4, atol=2e-5)}


def _ours(model, x, y, state):
    logits, final, cache = forward(model.params, model.config, x, state)
    loss, dlogits = layers.softmax_cross_entropy(logits, y)
    grads, dstate0 = backward(dlogits, None, cache)
    return loss, logits, final, grads, dstate0


sizes = st.tuples(
    st.integers(2, 40),  # V
    st.integers(1, 24),  # H
    st.integers(1, 3),  # L
    st.integers(1, 12),  # T
    st.integers(1, 5),  # B
    st.integers(0, 2**31 - 1),  # seed
)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=25, deadline=None)
@given(sizes=sizes)
def test_matches_torch_autograd(dtype, sizes):
    V, H, L, T, B, seed = sizes
    model = CharLSTM(ModelConfig(vocab_size=V, hidden_size=H, num_layers=L), seed=seed,
                     dtype=dtype)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, V, size=(T, B))
    y = rng.integers(0, V, size=(T, B))
    state = tuple(rng.normal(0, 0.5, (L, B, H)).astype(dtype) for _ in range(2))
    ours = _ours(model, x, y, state)
    theirs = torch_loss_and_grads(model.params, "lstm", L, x, y, state)
    tol = TOL[dtype]
    assert ours[0] == pytest.approx(theirs[0], rel=tol["rtol"] * 10, abs=tol["atol"])
    np.testing.assert_allclose(ours[1], theirs[1], **tol)
    for a, b in zip(ours[2], theirs[2]):
        np.testing.assert_allclose(a, b, **tol)
    assert set(ours[3]) == set(theirs[3]) == set(model.params)
    for name in model.params:
        np.testing.assert_allclose(ours[3][name], theirs[3][name], err_msg=name, **tol)
    for a, b in zip(ours[4], theirs[4]):
        np.testing.assert_allclose(a, b, **tol)


def test_sizes_cover_wide_and_narrow_vocabularies():
    """The randomised search above spans V > H and V < H; pin one of each explicitly."""
    for V, H in [(50, 8), (3, 20)]:
        model = CharLSTM(ModelConfig(vocab_size=V, hidden_size=H, num_layers=2), seed=1,
                         dtype=np.float64)
        rng = np.random.default_rng(0)
        x, y = rng.integers(0, V, (6, 2)), rng.integers(0, V, (6, 2))
        state = tuple(np.zeros((2, 2, H)) for _ in range(2))
        ours = _ours(model, x, y, state)
        theirs = torch_loss_and_grads(model.params, "lstm", 2, x, y, state)
        for name in model.params:
            np.testing.assert_allclose(ours[3][name], theirs[3][name], rtol=1e-10, atol=1e-12)


def test_state_dict_loads_into_torch_unchanged():
    model = CharLSTM(ModelConfig(vocab_size=11, hidden_size=7, num_layers=2), seed=0)
    lstm = torch.nn.LSTM(11, 7, 2)
    sd = {k.removeprefix("lstm."): torch.from_numpy(v) for k, v in model.params.items()
          if k.startswith("lstm.")}
    assert set(sd) == set(lstm.state_dict())
    lstm.load_state_dict(sd, strict=True)
