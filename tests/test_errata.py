"""Errata of the seed derivations, executed: each wrong formula fails the gradient check.

A plain LSTM cell (textbook loops, independent of charlstm.cells.lstm) is swapped
into the model's cell registry (the fast wing's cells switched off). With no
erratum it must pass the same float64 finite-difference check as the real cell;
with each erratum switched on,
its backward implements one seed formula literally and the check must fail, on
exactly the gradients that formula touches. docs/derivation.md has the table.

Run `python tests/test_errata.py` to print the measured errors for the docs.
"""

from __future__ import annotations

import types
from typing import NamedTuple

import numpy as np
import pytest

from charlstm import ModelConfig, fast
from charlstm.cells import CELLS, lstm
from charlstm.gradcheck import check_gradients, random_problem


class PlainCache(NamedTuple):
    h: np.ndarray  # (T+1, B, H)
    c: np.ndarray  # (T+1, B, H)
    pre: np.ndarray  # (T, B, 4H) pre-activations [i^ | f^ | g^ | o^] (some errata use them)
    act: np.ndarray  # (T, B, 4H) post-activations [i | f | g | o]
    W_hh: np.ndarray  # (4H, H)


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def plain_forward(xw, state0, W_hh, b_hh):
    """The LSTM forward written plainly: xw (T, B, 4H), state0 (h0, c0) each (B, H)."""
    T, B, G = xw.shape
    H = G // 4
    h, c = np.zeros((T + 1, B, H)), np.zeros((T + 1, B, H))
    pre, act = np.zeros((T, B, G)), np.zeros((T, B, G))
    h[0], c[0] = state0
    for t in range(T):
        pre[t] = xw[t] + h[t] @ W_hh.T + b_hh
        i, f = sigmoid(pre[t, :, :H]), sigmoid(pre[t, :, H:2 * H])
        g, o = np.tanh(pre[t, :, 2 * H:3 * H]), sigmoid(pre[t, :, 3 * H:])
        act[t] = np.concatenate([i, f, g, o], axis=1)
        c[t + 1] = f * c[t] + i * g
        h[t + 1] = o * np.tanh(c[t + 1])
    return h[1:], (h[T].copy(), c[T].copy()), PlainCache(h, c, pre, act, W_hh)


def plain_backward(dhs, dstateT, cache, erratum=None):
    """The LSTM backward; `erratum` swaps in one seed formula, literally."""
    h, c, pre, act, W_hh = cache
    T, B, G = act.shape
    H = G // 4
    dz_all = np.zeros((T, B, G))
    dh_rec, dc = dstateT[0].copy(), dstateT[1].copy()  # from step t+1 (or the next window)
    for t in reversed(range(T)):
        i, f, g, o = (act[t, :, k * H:(k + 1) * H] for k in range(4))
        ai, af, ag, ao = (pre[t, :, k * H:(k + 1) * H] for k in range(4))
        tc = np.tanh(c[t + 1])
        dh = dhs[t] if erratum == "no_recurrent_h_path" else dhs[t] + dh_rec
        # forward: h = o*tanh(c)
        do = dh * tc
        dh_for_c = dhs[t] if erratum == "cell_from_output_only" else dh
        dc_from_h = dh_for_c * o * (1 - tc ** 2)
        dc = dc_from_h if erratum == "cell_overwritten" else dc + dc_from_h
        # forward: c = f*c_prev + i*g
        di, df, dg = dc * g, dc * c[t], dc * i
        dc = dc if erratum == "cell_carry_without_f" else dc * f
        # forward: activations
        dzi = di * (ag * (1 - ag) if erratum == "input_gate_uses_candidate_preact"
                    else i * (1 - i))
        dzf = df * (af * (1 - af) if erratum == "forget_gate_at_preact" else f * (1 - f))
        dzg = dg * (1 - g if erratum == "tanh_no_square" else 1 - g ** 2)
        dzo = do * (ao * (1 - ao) if erratum == "output_gate_at_preact" else o * (1 - o))
        dz_all[t] = np.concatenate([dzi, dzf, dzg, dzo], axis=1)
        # forward: z = xw + h_prev W_hh^T + b_hh
        dz_h = dz_all[t].copy()
        if erratum == "differentiates_sigmoid_derivative":
            dz_h[:, :H] = dzi * i * (1 - i) * (1 - 2 * i)  # dE/di^ * d/dh[i(1-i)]
        dh_rec = np.zeros_like(dh_rec) if erratum == "no_recurrent_h_path" else dz_h @ W_hh
    dW_hh = np.einsum("tbg,tbh->gh", dz_all, h[:-1])
    if erratum == "transposed_weight_grad":  # h dz^T per gate block instead of dz h^T
        dW_hh = np.concatenate([blk.T for blk in np.split(dW_hh, 4)])
    if erratum == "omit_candidate_update":  # W_a, U_a (and their biases) never updated
        dz_all[:, :, 2 * H:3 * H] = 0.0
        dW_hh[2 * H:3 * H] = 0.0
    return dz_all, (dh_rec, dc), dW_hh, dz_all.sum(axis=(0, 1))


def plain_cell(erratum=None):
    """The LSTM cell with its window forward/backward replaced, for CELLS["lstm"]."""
    return types.SimpleNamespace(
        **{name: getattr(lstm, name) for name in ("GATES", "STATE_NAMES", "init_bias",
                                                  "infer", "step", "keep_gate")},
        forward=plain_forward,
        backward=lambda dhs, dstateT, cache: plain_backward(dhs, dstateT, cache, erratum))


# erratum -> (gradients that must fail, gradients that must stay exact)
W = ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0"]
EVERYTHING_BUT_DECODER = W + ["state.h0", "state.c0"]
DECODER = ["decoder.weight", "decoder.bias"]
ERRATA = {
    "omit_candidate_update": (W, DECODER + ["state.h0", "state.c0"]),
    "tanh_no_square": (EVERYTHING_BUT_DECODER, DECODER),
    "input_gate_uses_candidate_preact": (EVERYTHING_BUT_DECODER, DECODER),
    "forget_gate_at_preact": (EVERYTHING_BUT_DECODER, DECODER),
    "output_gate_at_preact": (EVERYTHING_BUT_DECODER, DECODER),
    "cell_carry_without_f": (EVERYTHING_BUT_DECODER, DECODER),
    "cell_overwritten": (EVERYTHING_BUT_DECODER, DECODER),
    "no_recurrent_h_path": (EVERYTHING_BUT_DECODER, DECODER),
    "transposed_weight_grad": (["lstm.weight_hh_l0"],
                               DECODER + W[:1] + W[2:] + ["state.h0", "state.c0"]),
    "differentiates_sigmoid_derivative": (EVERYTHING_BUT_DECODER, DECODER),
    "cell_from_output_only": (EVERYTHING_BUT_DECODER, DECODER),
}
FAIL, PASS = 1e-3, 1e-7  # a wrong formula misses by > 0.1%; ours agree to < 1e-7


def errors_with(erratum, monkeypatch) -> dict:
    """Max relative error per gradient, with the plain cell carrying `erratum`."""
    config = ModelConfig(vocab_size=5, hidden_size=4, num_layers=1)
    params, x, y, state, _ = random_problem(config, 4, 2, seed=3)
    monkeypatch.setitem(CELLS, "lstm", plain_cell(erratum))
    with fast.use(fast_cells=False):  # the model runs the registry's cell
        return {r.name: r.max_rel_error for r in check_gradients(params, config, x, y, state)}


def test_plain_cell_without_errata_passes(monkeypatch):
    errors = errors_with(None, monkeypatch)
    assert len(errors) == 8
    assert max(errors.values()) < PASS, errors


@pytest.mark.parametrize("fast_cells", [False, True])
def test_real_cell_passes_on_the_same_problem(fast_cells):
    """The reference LSTM (cells/lstm.py) and the fast one (fast/lstm.py)."""
    config = ModelConfig(vocab_size=5, hidden_size=4, num_layers=1)
    params, x, y, state, _ = random_problem(config, 4, 2, seed=3)
    with fast.use(fast_cells=fast_cells):
        errors = {r.name: r.max_rel_error for r in check_gradients(params, config, x, y, state)}
    assert len(errors) == 8 and max(errors.values()) < PASS


@pytest.mark.parametrize("erratum", list(ERRATA))
def test_seed_formula_fails_the_gradient_check(erratum, monkeypatch):
    must_fail, must_pass = ERRATA[erratum]
    errors = errors_with(erratum, monkeypatch)
    for name in must_fail:
        assert errors[name] > FAIL, (erratum, name, errors[name])
    for name in must_pass:
        assert errors[name] < PASS, (erratum, name, errors[name])


if __name__ == "__main__":
    class _Patch:  # a minimal stand-in for pytest's monkeypatch
        def setitem(self, d, k, v):
            d[k] = v

    for name in ERRATA:
        errs = errors_with(name, _Patch())
        worst = max(errs, key=errs.get)
        print(f"{name:36s} worst {errs[worst]:.2e} on {worst}")
    errs = errors_with(None, _Patch())
    print(f"{'(none: the plain cell as derived)':36s} worst {max(errs.values()):.2e}")
    CELLS["lstm"] = lstm
