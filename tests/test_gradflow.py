"""`charlstm gradflow`: per-step state gradients are exact, and the command reports them."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from charlstm import ModelConfig, layers
from charlstm.gradcheck import numeric_gradient, random_problem, relative_error
from charlstm.gradflow import decay_per_step, default_variants, keep_gate, measure, state_gradients
from charlstm.model import backward, forward


def _last_step_loss(params, config, x, y_last, state, t):
    """Sum over windows of the last step's cross-entropy, as a function of the state before t."""
    logits, _, _ = forward(params, config, x[t:], state)
    return layers.softmax_cross_entropy(logits[-1:], y_last[None, :])[0] * x.shape[1]


@pytest.mark.parametrize("cell,L", [("lstm", 1), ("lstm", 2), ("gru", 1), ("rnn", 2)])
def test_state_gradients_match_finite_differences(cell, L):
    config = ModelConfig(vocab_size=5, hidden_size=3, num_layers=L, cell=cell)
    params, x, y, _, _ = random_problem(config, 5, 2, seed=4)
    grads = state_gradients(params, config, x, y[-1])
    for t in (0, 2, 4):
        # the state before step t: zeros for t = 0, else what steps 0..t-1 leave behind
        state = forward(params, config, x[:t])[1] if t else tuple(np.zeros((L, 2, 3))
                                                                  for _ in grads)
        for s, g in zip(state, grads):
            num = numeric_gradient(
                lambda state=state, t=t: _last_step_loss(params, config, x, y[-1], state, t), s)
            assert relative_error(g[t], num) < 1e-7, (cell, t)
            assert np.abs(num).max() > 0


def test_step_walk_equals_one_whole_window_backward():
    config = ModelConfig(vocab_size=6, hidden_size=4, num_layers=2)
    params, x, y, _, _ = random_problem(config, 7, 3, seed=2)
    logits, _, cache = forward(params, config, x)
    _, d = layers.softmax_cross_entropy(logits[-1:], y[-1][None, :])
    dlogits = np.zeros_like(logits)
    dlogits[-1] = d[0] * 3
    _, dstate0 = backward(dlogits, None, cache)
    grads = state_gradients(params, config, x, y[-1])
    for a, b in zip(grads, dstate0):
        np.testing.assert_allclose(a[0], b, rtol=1e-12, atol=1e-15)


def test_keep_gate_is_sigmoid_of_the_bias_when_weights_vanish():
    for cell in ("lstm", "gru"):
        config = ModelConfig(vocab_size=4, hidden_size=3, num_layers=1, cell=cell,
                             forget_bias=1.5)
        params, x, _, _, _ = random_problem(config, 4, 2, seed=0)
        params = {k: np.zeros_like(v) for k, v in params.items()}
        params[f"{cell}.bias_ih_l0"][3:6] = 1.5
        assert keep_gate(params, config, x) == pytest.approx(1 / (1 + np.exp(-1.5)), rel=1e-12)
    config = ModelConfig(vocab_size=4, hidden_size=3, cell="rnn")
    assert keep_gate(random_problem(config, 2, 1, 0)[0], config, np.zeros((2, 1), int)) is None


def test_decay_per_step_of_a_geometric_series():
    assert decay_per_step(0.5 ** np.arange(200)) == pytest.approx(0.5)
    assert decay_per_step(0.9 ** np.arange(5)) == pytest.approx(0.9)


def test_on_real_text_the_carousel_outlasts_the_tanh_rnn(tinyshakespeare):
    text = tinyshakespeare.read_text(encoding="utf-8")[:20000]
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in text])
    rows = measure(ids, default_variants(len(chars), 32), seq_len=40, windows=4,
                   train_steps=0, train_batch=4, train_seq_len=8, lr=1e-3, seed=0)
    norm = {(r.variant, r.state, r.distance): r.norm for r in rows}
    relative = {key: norm[key[0], key[1], 40] / norm[key[0], key[1], 1]
                for key in [("lstm fb=1", "c"), ("lstm fb=0", "c"), ("rnn", "h")]}
    # At init the LSTM's cell gradient shrinks by about its forget gate, sigma(1) ~ 0.73,
    # per step; with forget bias 0 by sigma(0) = 0.5; the RNN's by |W_hh| tanh' < 0.6.
    assert relative["lstm fb=1", "c"] > 1e3 * relative["lstm fb=0", "c"]
    assert relative["lstm fb=1", "c"] > 1e3 * relative["rnn", "h"]


@pytest.fixture
def small_text(tmp_path):
    rng = np.random.default_rng(0)
    words = ["the ", "cat ", "sat ", "on ", "a ", "mat, ", "and ", "then\n"]
    path = tmp_path / "small.txt"
    path.write_text("".join(rng.choice(words, size=2000)), encoding="utf-8")
    return path


FAST = ["--seq-len", "12", "--hidden-size", "6", "--windows", "3", "--train-steps", "3",
        "--train-batch-size", "4", "--train-seq-len", "8"]


def test_command_writes_csv_png_and_table(small_text, tmp_path, charlstm_cli):
    out = tmp_path / "flow"
    printed = charlstm_cli.ok("gradflow", "--data", small_text, "--out", out, *FAST)
    for label in ["lstm fb=1 init dc", "lstm fb=0 trained dh", "gru fb=1 trained dh",
                  "rnn init dh", "decay/step", "keep gate"]:
        assert label in printed
    with open(out / "gradflow.csv") as f:
        rows = list(csv.DictReader(f))
    # (lstm: h and c, twice; gru and rnn: h) x 2 phases x 12 distances
    assert len(rows) == (2 * 2 + 1 + 1) * 2 * 12
    assert {r["distance"] for r in rows} == {str(k) for k in range(1, 13)}
    assert all(float(r["norm"]) > 0 for r in rows)
    assert (out / "gradflow.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A second run refuses to overwrite, unless told to.
    assert "already exists" in charlstm_cli.error("gradflow", "--data", small_text, "--out", out,
                                                  *FAST)
    charlstm_cli.ok("gradflow", "--data", small_text, "--out", out, "--force", *FAST)


@pytest.mark.parametrize("args", [["--data", "/no/such/file.txt"], ["--seq-len", "0"],
                                  ["--lr", "-1"], ["--seq-len", "5000"]])
def test_bad_input_gives_one_line_errors(args, small_text, tmp_path, charlstm_cli):
    if "--data" not in args:
        args = ["--data", small_text, *args]
    charlstm_cli.error("gradflow", "--out", tmp_path / "o", *args)
    assert not (tmp_path / "o").exists()
