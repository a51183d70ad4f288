"""The proofs every cell gets, parametrised over the cell registry (charlstm.cells.CELLS):
the interface is complete, the forward equals a naive reference, every gradient
passes a finite-difference check, chunked == whole window == step by step, and the
numbers equal PyTorch autograd on the same weights (dropout masks included).

These run the REFERENCE cells (cells/, the maths as derived): the fast wing's cells are
switched off for every test here, and tests/test_fast_lstm.py proves the fast LSTM
equal to the reference one.

A new cell in CELLS is covered by all of these once tests/reference.py has its naive
step and interop/torch.py its torch.nn twin.
"""

from __future__ import annotations

import inspect
import itertools

import numpy as np
import pytest
from conftest import NEEDS_TORCH
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import naive_cross_entropy, naive_lm_forward

from charlstm import CharLSTM, ModelConfig, cli, fast
from charlstm.cells import CELLS, Cell
from charlstm.gradcheck import check_gradients, numeric_gradient, random_problem, relative_error
from charlstm.layers import softmax_cross_entropy
from charlstm.model import forward, loss_and_grads, make_dropout_masks, step
from charlstm.optim import make_optimizer

try:  # the oracle: these proofs skip, saying what to install, where torch is missing
    import torch
    from torch_oracle import torch_loss_and_grads

    from charlstm.interop.torch import RECURRENT
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason=NEEDS_TORCH)

NAMES = list(CELLS)
MEMBERS = [m for m in vars(Cell) if not m.startswith("_")] + list(Cell.__annotations__)
# (T, B, L, dropout): dropout masks exist only between layers, so only with L >= 2
WINDOWS = [(T, B, L, drop) for T, B, L, drop in itertools.product([1, 2, 5], [1, 3], [1, 2],
                                                                  [False, True])
           if L >= 2 or not drop]
CASES = [(cell, *w) for cell in NAMES for w in WINDOWS]
# the gate that carries the state from step to step (Cell.keep_gate), or None
KEEP_GATES = {"lstm": "f", "gru": "z", "rnn": None}
TOL = {np.float64: dict(rtol=1e-10, atol=1e-10), np.float32: dict(rtol=2e-4, atol=2e-5)}


def state_names(cell):
    return {f"state.{s}0" for s in CELLS[cell].STATE_NAMES}


@pytest.fixture(autouse=True)
def reference_cells():
    """Every test here runs the reference cells, never the fast wing's twins."""
    with fast.use(fast_cells=False):
        yield


# ----------------------------------------------------------------------------- interface

@pytest.mark.parametrize("cell", NAMES)
def test_cell_implements_the_whole_interface(cell):
    module = CELLS[cell]
    assert not [m for m in MEMBERS if not hasattr(module, m)], cell
    for m in MEMBERS:
        if callable(getattr(Cell, m, None)):
            want = list(inspect.signature(getattr(Cell, m)).parameters)[1:]  # drop self
            assert list(inspect.signature(getattr(module, m)).parameters) == want, (cell, m)
    assert module.STATE_NAMES[0] == "h" and module.GATES >= 1


def run_window(module, T=3, B=2, H=4):
    """A cell's forward() on a random window: hs (T, B, H), final state, cache."""
    rng = np.random.default_rng(0)
    xw = rng.normal(size=(T, B, module.GATES * H))
    state0 = tuple(rng.normal(size=(B, H)) for _ in module.STATE_NAMES)
    W_hh, b_hh = rng.normal(size=(module.GATES * H, H)), rng.normal(size=module.GATES * H)
    return module.forward(xw, state0, W_hh, b_hh)


@pytest.mark.parametrize("cell", NAMES)
def test_keep_gate_is_the_cells_state_carrying_gate(cell):
    """keep_gate is the named cached gate (LSTM f, GRU z), or None for a cell without
    one: a cell returning None, or another gate, fails."""
    module = CELLS[cell]
    cache = run_window(module)[2]
    gate, name = module.keep_gate(cache), KEEP_GATES[cell]
    if name is None:
        assert gate is None
        return
    assert gate is not None and gate.shape == (3, 2, 4) and np.all((gate > 0) & (gate < 1))
    np.testing.assert_array_equal(gate, module.activations(cache)[name])


@pytest.mark.parametrize("cell", NAMES)
def test_activations_name_every_state_and_gate(cell):
    module = CELLS[cell]
    hs, stateT, cache = run_window(module)
    acts = module.activations(cache)
    assert list(acts) == [*module.STATE_NAMES, *module.GATE_NAMES]
    assert set(module.TANH_GATES) <= set(module.GATE_NAMES)
    assert all(a.shape == hs.shape for a in acts.values())
    np.testing.assert_array_equal(acts["h"], hs)
    for k, s in enumerate(module.STATE_NAMES):
        np.testing.assert_array_equal(acts[s][-1], stateT[k])
    for g in module.GATE_NAMES:  # sigmoid gates in (0, 1), tanh ones in (-1, 1)
        low = -1 if g in module.TANH_GATES else 0
        assert np.all((acts[g] > low) & (acts[g] < 1)), g


# ----------------------------------------------------------------------------- forward

@pytest.mark.parametrize("cell,T,B,L,use_dropout", CASES)
def test_fused_forward_matches_naive_reference(cell, T, B, L, use_dropout):
    config = ModelConfig(vocab_size=6, hidden_size=4, num_layers=L, dropout=0.4, cell=cell)
    params, x, y, state, masks = random_problem(config, T, B, seed=T * 100 + B * 10 + L,
                                                dropout_mask=use_dropout)
    assert (masks is not None) == use_dropout
    logits, final, _ = forward(params, config, x, state, masks)
    ref_logits, ref_final = naive_lm_forward(params, cell, x, state, L, masks)
    np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=1e-12)
    for a, b in zip(final, ref_final, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    loss, _ = softmax_cross_entropy(logits, y)
    assert loss == pytest.approx(naive_cross_entropy(ref_logits, y), abs=1e-12)


# ----------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("cell,T,B,L,use_dropout", CASES)
def test_gradient_check_every_parameter_and_initial_state(cell, T, B, L, use_dropout):
    config = ModelConfig(vocab_size=5, hidden_size=4, num_layers=L, dropout=0.3, cell=cell)
    params, x, y, state, masks = random_problem(config, T, B, seed=7 + T + B + L,
                                                dropout_mask=use_dropout)
    rows = check_gradients(params, config, x, y, state, masks)
    assert {r.name for r in rows} == set(params) | state_names(cell)
    for row in rows:
        assert row.max_rel_error < 1e-7, row
        assert row.max_abs_grad > 0.0, row  # the check compared something non-trivial


@pytest.mark.parametrize("cell", NAMES)
def test_gradient_check_catches_a_wrong_backward(cell, monkeypatch):
    """The check is not vacuous: break one derivative and it must fail."""
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


@pytest.mark.parametrize("cell", NAMES)
def test_final_state_gradient_is_used(cell):
    """dL/d(final state) from a following window changes every gradient consistently:
    the gradient of  loss + sum_s <w_s, s_T>  is checked against finite differences."""
    config = ModelConfig(vocab_size=4, hidden_size=3, num_layers=2, cell=cell)
    params, x, y, state, _ = random_problem(config, 3, 2, seed=11)
    rng = np.random.default_rng(0)
    w = tuple(rng.normal(size=s.shape) for s in state)

    def total():
        logits, final, _ = forward(params, config, x, state)
        return (softmax_cross_entropy(logits, y)[0]
                + sum(float((a * b).sum()) for a, b in zip(w, final)))

    _, grads, _, dstate0, _ = loss_and_grads(params, config, x, y, state, dstate=w)
    for name, value in params.items():
        assert relative_error(grads[name], numeric_gradient(total, value)) < 1e-7, name
    for s, ds in zip(state, dstate0):
        assert relative_error(ds, numeric_gradient(total, s)) < 1e-7


# ----------------------------------------------------------------------------- windows

@pytest.mark.parametrize("cell", NAMES)
@pytest.mark.parametrize("L", [1, 3])
def test_whole_window_equals_step_by_step_and_two_chained_halves(cell, L):
    config = ModelConfig(vocab_size=7, hidden_size=6, num_layers=L, cell=cell)
    params, x, y, state, _ = random_problem(config, 8, 3, seed=3)
    T = x.shape[0]
    logits, final, _ = forward(params, config, x, state)
    loss, grads, _, dstate0, _ = loss_and_grads(params, config, x, y, state)

    # Step by step: the state carried through T windows of length 1 gives the same logits.
    s, step_logits = state, []
    for t in range(T):
        out, s, _ = forward(params, config, x[t:t + 1], s)
        step_logits.append(out[0])
    np.testing.assert_allclose(np.stack(step_logits), logits, rtol=0, atol=1e-13)
    for a, b in zip(s, final):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)

    # Two halves: forward carries the state, backward carries dL/d(state) from the second
    # half into the first. The whole window's mean is k/T of the first half's mean plus
    # (T-k)/T of the second's, so the second half's dL/d(mid) enters the first half
    # scaled by (T-k)/k, and the two halves' gradients are weighted k/T and (T-k)/T.
    k = 3
    _, g1_free, mid, _, _ = loss_and_grads(params, config, x[:k], y[:k], state)
    loss2, g2, final2, dmid, _ = loss_and_grads(params, config, x[k:], y[k:], mid)
    loss1, g1, _, dstate0_chained, _ = loss_and_grads(
        params, config, x[:k], y[:k], state, dstate=tuple(d * (T - k) / k for d in dmid))
    assert loss == pytest.approx((k * loss1 + (T - k) * loss2) / T, rel=1e-13)
    for a, b in zip(final2, final):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)
    for name in params:
        np.testing.assert_allclose(k / T * g1[name] + (T - k) / T * g2[name], grads[name],
                                   rtol=1e-10, atol=1e-14)
    for a, b in zip(dstate0_chained, dstate0):
        np.testing.assert_allclose(k / T * a, b, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("cell", NAMES)
@pytest.mark.parametrize("L,B", [(1, 1), (2, 3), (3, 2)])
def test_evaluation_path_without_cache_equals_training_forward(cell, L, B):
    config = ModelConfig(vocab_size=9, hidden_size=7, num_layers=L, cell=cell)
    params, x, _, state, _ = random_problem(config, 6, B, seed=L * 10 + B)
    logits, final, _ = forward(params, config, x, state)
    fast_logits, fast_final, none = forward(params, config, x, state, need_cache=False)
    assert none is None
    np.testing.assert_allclose(fast_logits, logits, rtol=0, atol=1e-14)
    for a, b in zip(fast_final, final, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-14)
    model = CharLSTM(config, params=params, dtype=np.float64)
    np.testing.assert_allclose(model.forward(x, state)[0], logits, rtol=0, atol=1e-14)


@pytest.mark.parametrize("cell", NAMES)
@pytest.mark.parametrize("L,B", [(1, 1), (2, 1), (2, 4)])
def test_sampling_step_equals_whole_window(cell, L, B):
    config = ModelConfig(vocab_size=10, hidden_size=6, num_layers=L, cell=cell)
    params, x, _, state, _ = random_problem(config, 7, B, seed=L + B)
    logits, final, _ = forward(params, config, x, state)
    s = state
    before = tuple(a.copy() for a in state)
    for t in range(x.shape[0]):
        out, s = step(params, config, x[t], s)
        np.testing.assert_allclose(out, logits[t], rtol=0, atol=1e-13)
    for a, b in zip(s, final, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)
    for a, b in zip(state, before):  # the caller's state is never modified
        np.testing.assert_array_equal(a, b)
    out, s = step(params, config, x[0], None)  # None means zeros
    zero = tuple(np.zeros_like(a) for a in state)
    np.testing.assert_allclose(out, step(params, config, x[0], zero)[0], rtol=0, atol=0)


@pytest.mark.parametrize("cell", NAMES)
def test_sampling_step_in_float32_stays_float32(cell):
    model = CharLSTM(ModelConfig(vocab_size=8, hidden_size=5, num_layers=2, cell=cell), seed=0)
    logits, state = step(model.params, model.config, np.array([1, 2]), None)
    assert logits.dtype == np.float32 and logits.shape == (2, 8)
    assert [(s.dtype, s.shape) for s in state] == [(np.float32, (2, 2, 5))] * len(state)


# ----------------------------------------------------------------------------- PyTorch

sizes = st.tuples(
    st.integers(2, 40),  # V
    st.integers(1, 24),  # H
    st.integers(1, 3),  # L
    st.integers(1, 12),  # T
    st.integers(1, 5),  # B
    st.booleans(),  # dropout masks between the layers (when L >= 2)
    st.integers(0, 2**31 - 1),  # seed
)


@needs_torch
@pytest.mark.parametrize("cell", NAMES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=15, deadline=None)
@given(sizes=sizes)
def test_matches_torch_autograd(cell, dtype, sizes):
    V, H, L, T, B, use_dropout, seed = sizes
    config = ModelConfig(vocab_size=V, hidden_size=H, num_layers=L, dropout=0.3, cell=cell)
    model = CharLSTM(config, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, V, size=(T, B)), rng.integers(0, V, size=(T, B))
    state = tuple(rng.normal(0, 0.5, (L, B, H)).astype(dtype) for _ in CELLS[cell].STATE_NAMES)
    masks = make_dropout_masks(config, T, B, rng, dtype) if use_dropout else None  # None: L=1
    logits, _, _ = forward(model.params, config, x, state, masks)
    loss, grads, final, dstate0, _ = loss_and_grads(model.params, config, x, y, state,
                                                    masks)
    t_loss, t_logits, t_final, t_grads, t_dstate0 = torch_loss_and_grads(
        model.params, cell, L, x, y, state, masks)
    tol = TOL[dtype]
    assert loss == pytest.approx(t_loss, rel=tol["rtol"] * 10, abs=tol["atol"])
    np.testing.assert_allclose(logits, t_logits, **tol)
    for a, b in zip(final, t_final, strict=True):
        np.testing.assert_allclose(a, b, **tol)
    assert set(grads) == set(t_grads) == set(model.params)
    for name in model.params:
        np.testing.assert_allclose(grads[name], t_grads[name], err_msg=name, **tol)
    for a, b in zip(dstate0, t_dstate0, strict=True):
        np.testing.assert_allclose(a, b, **tol)


@needs_torch
@pytest.mark.parametrize("cell", NAMES)
def test_torch_parity_with_dropout_between_layers(cell):
    """Pinned: two and three layers with masks, wide and narrow vocabularies."""
    for V, H, L in [(50, 8, 2), (3, 20, 3)]:
        config = ModelConfig(vocab_size=V, hidden_size=H, num_layers=L, dropout=0.5, cell=cell)
        params, x, y, state, masks = random_problem(config, 6, 2, seed=V, dropout_mask=True)
        assert len(masks) == L - 1 and any((m == 0).any() for m in masks)
        _, grads, _, dstate0, _ = loss_and_grads(params, config, x, y, state, masks)
        _, _, _, t_grads, t_dstate0 = torch_loss_and_grads(params, cell, L, x, y, state, masks)
        for name in params:
            np.testing.assert_allclose(grads[name], t_grads[name], rtol=1e-10, atol=1e-12)
        for a, b in zip(dstate0, t_dstate0, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@needs_torch
@pytest.mark.parametrize("cell", NAMES)
def test_state_dict_loads_into_torch_unchanged(cell):
    assert cell in RECURRENT  # its torch twin, for interop and the parity proofs
    model = CharLSTM(ModelConfig(vocab_size=11, hidden_size=7, num_layers=2, cell=cell), seed=0)
    module = RECURRENT[cell](11, 7, 2)
    sd = {k.removeprefix(cell + "."): torch.from_numpy(v) for k, v in model.params.items()
          if k.startswith(cell + ".")}
    assert set(sd) == set(module.state_dict())
    module.load_state_dict(sd, strict=True)


# ----------------------------------------------------------------------------- training

@pytest.mark.parametrize("cell", NAMES)
def test_float32_throughout_and_overfits_a_short_string(cell):
    text = "hello world, hello lstm, gru and rnn. "
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in text])
    x, y = ids[:-1, None], ids[1:, None]
    model = CharLSTM(ModelConfig(vocab_size=len(chars), hidden_size=32, num_layers=1,
                                 cell=cell), seed=0)
    opt = make_optimizer("adam", model.params, lr=1e-2)
    losses = []
    for _ in range(300):
        loss, grads, state = model.loss_and_grads(x, y)
        assert all(g.dtype == np.float32 for g in grads.values())
        assert all(s.dtype == np.float32 for s in state)
        assert set(grads) == set(model.params)
        opt.step(model.params, grads)
        losses.append(loss)
    assert losses[0] > 2.0
    assert losses[-1] < 0.05


@pytest.mark.parametrize("cell", NAMES)
def test_gradcheck_command_takes_the_cell(cell, capsys):
    rc = cli.main(["gradcheck", "--cell", cell, "--hidden-size", "3", "--seq-len", "3",
                   "--batch-size", "2", "--vocab-size", "4"])
    out = capsys.readouterr().out
    assert rc == 0 and "PASS" in out
    for name in [f"{cell}.weight_ih_l0", f"{cell}.weight_hh_l1", "state.h0"]:
        assert name in out
    assert ("state.c0" in out) == ("state.c0" in state_names(cell))
