"""The model around the cells: initialisation, the loss at init, input checks."""

from __future__ import annotations

import numpy as np
import pytest

from charlstm import CharLSTM, ModelConfig
from charlstm.cells import CELLS

# the gate block init_bias shifts by forget_bias: LSTM f, GRU z; the tanh RNN has none
FORGET_BLOCK = {"lstm": 1, "gru": 1, "rnn": None}


def test_every_cell_says_which_block_gets_the_forget_bias():
    assert set(FORGET_BLOCK) == set(CELLS)


def test_initial_loss_is_close_to_log_vocab():
    V = 65
    model = CharLSTM(ModelConfig(vocab_size=V, hidden_size=64, num_layers=2), seed=0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, size=(50, 8))
    y = rng.integers(0, V, size=(50, 8))
    loss, _, _ = model.loss_and_grads(x, y)
    assert abs(loss - np.log(V)) < 0.05


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("fb", [0.0, 1.0])
def test_forget_bias_and_init_range(cell, fb):
    H, L = 16, 2
    config = ModelConfig(vocab_size=10, hidden_size=H, num_layers=L, forget_bias=fb, cell=cell)
    p = CharLSTM(config, seed=3, dtype=np.float64).params
    bound = 1 / np.sqrt(H)
    block = FORGET_BLOCK[cell]
    for name, value in p.items():
        if name.startswith(f"{cell}.bias_ih") and block is not None:
            rows = slice(block * H, (block + 1) * H)
            assert np.all(np.abs(value[rows] - fb) <= bound)
            assert np.all(np.abs(np.delete(value, np.r_[rows])) <= bound)
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
