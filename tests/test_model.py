"""The model around the cells: initialisation, the loss at init, input checks."""

from __future__ import annotations

import numpy as np
import pytest

from charlstm import CharLSTM, ModelConfig
from charlstm.cells import CELLS


def test_initial_loss_is_close_to_log_vocab():
    V = 65
    model = CharLSTM(ModelConfig(vocab_size=V, hidden_size=64, num_layers=2), seed=0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, size=(50, 8))
    y = rng.integers(0, V, size=(50, 8))
    loss, _, _ = model.loss_and_grads(x, y)
    assert abs(loss - np.log(V)) < 0.05


@pytest.mark.parametrize("cell", CELLS)
def test_forget_bias_opens_the_keep_gate_and_init_range(cell):
    """Init is torch's U(-1/sqrt(H), 1/sqrt(H)) everywhere; forget_bias is added to one
    H-block of bias_ih, and it is the cell's keep gate (with zero weights the cached keep
    gate is sigmoid(forget_bias)); a cell without a keep gate ignores forget_bias."""
    H, L, fb = 16, 2, 1.5
    configs = [ModelConfig(vocab_size=10, hidden_size=H, num_layers=L, forget_bias=b,
                           cell=cell) for b in (0.0, fb)]
    p0, p1 = (CharLSTM(c, seed=3, dtype=np.float64).params for c in configs)
    bound = 1 / np.sqrt(H)
    assert all(np.all(np.abs(v) <= bound) for v in p0.values())
    module = CELLS[cell]
    for name in p0:
        shift = p1[name] - p0[name]
        if not name.startswith(f"{cell}.bias_ih"):
            assert not shift.any(), name
            continue
        shifted = np.flatnonzero(shift.reshape(module.GATES, H).any(axis=1))
        rng = np.random.default_rng(0)
        xw = np.broadcast_to(shift, (2, 3, module.GATES * H)).copy()  # zero weights
        state0 = tuple(rng.normal(size=(3, H)) for _ in module.STATE_NAMES)
        zeros = np.zeros((module.GATES * H, H))
        keep = module.keep_gate(module.forward(xw, state0, zeros, zeros[:, 0])[2])
        if keep is None:
            assert len(shifted) == 0
        else:
            assert len(shifted) == 1 and np.allclose(shift[shifted[0] * H:][:H], fb)
            np.testing.assert_allclose(keep, 1 / (1 + np.exp(-fb)), rtol=1e-12)
    same = CharLSTM(configs[1], seed=3, dtype=np.float64).params
    assert all(np.array_equal(p1[k], same[k]) for k in p1)


def test_out_of_range_or_non_integer_ids_are_rejected():
    model = CharLSTM(ModelConfig(vocab_size=5, hidden_size=4), seed=0)
    with pytest.raises(ValueError, match="ids"):
        model.forward(np.array([[5]]))
    with pytest.raises(ValueError, match="integer"):
        model.forward(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ValueError):
        ModelConfig(vocab_size=0)
    with pytest.raises(ValueError):
        ModelConfig(vocab_size=3, dropout=1.0)
