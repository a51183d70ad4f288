"""charlstm.activity: activations recorded right, statistics proven on constructed data."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from charlstm import CharLSTM, ModelConfig, activity, layers
from charlstm.text import Vocab

TEXT = 'ROMEO:\nShe said "hi (and more)" to me.\n\nJULIET:\nWhat [light] breaks?\n' * 3
VOCAB = Vocab.from_text(TEXT)
SIGNALS = {"lstm": ["h", "c", "i", "f", "g", "o"], "gru": ["h", "r", "z", "n"], "rnn": ["h"]}


def model(cell, layers=2, hidden=6):
    config = ModelConfig(vocab_size=len(VOCAB), hidden_size=hidden, num_layers=layers,
                         cell=cell)
    return CharLSTM(config, seed=3, dtype=np.float64)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_record_names_shapes_and_probabilities(cell):
    m, ids = model(cell), VOCAB.encode(TEXT)
    acts = activity.record(m.params, m.config, ids, window=17)
    assert len(acts.signals) == 2
    for layer in acts.signals:
        assert [s.name for s in layer] == SIGNALS[cell]
        assert all(s.values.shape == (len(ids), 6) for s in layer)
    # windows with carried state give the model's one-pass predictions
    logits, _ = m.forward(ids[:, None])
    np.testing.assert_allclose(acts.probs, np.exp(layers.log_softmax(logits[:, 0])),
                               rtol=1e-10, atol=1e-12)
    one_pass = activity.record(m.params, m.config, ids, window=len(ids))
    for a, b in zip(acts.signals[1], one_pass.signals[1]):
        np.testing.assert_allclose(a.values, b.values, rtol=1e-10, atol=1e-12)


def test_lstm_signals_are_the_named_gates():
    """h = o*tanh(c) and c = f*c_prev + i*g hold only if each block got its name."""
    m, ids = model("lstm"), VOCAB.encode(TEXT)
    for layer in activity.record(m.params, m.config, ids).signals:
        s = {sig.name: sig.values for sig in layer}
        c_prev = np.vstack([np.zeros((1, 6)), s["c"][:-1]])
        np.testing.assert_allclose(s["c"], s["f"] * c_prev + s["i"] * s["g"], atol=1e-12)
        np.testing.assert_allclose(s["h"], s["o"] * np.tanh(s["c"]), atol=1e-12)
        assert {sig.name: sig.kind for sig in layer} == {
            "h": "state", "c": "state", "i": "gate", "f": "gate", "g": "tanh", "o": "gate"}


def test_gru_signals_are_the_named_gates():
    """h = (1 - z)*n + z*h_prev (torch's GRU) holds only if z and n are named right."""
    m, ids = model("gru"), VOCAB.encode(TEXT)
    for layer in activity.record(m.params, m.config, ids).signals:
        s = {sig.name: sig.values for sig in layer}
        h_prev = np.vstack([np.zeros((1, 6)), s["h"][:-1]])
        np.testing.assert_allclose(s["h"], (1 - s["z"]) * s["n"] + s["z"] * h_prev, atol=1e-12)
        assert all(s[g].min() > 0 and s[g].max() < 1 for g in "rz")


def test_text_features_on_a_constructed_text():
    text = 'AB "x(y)"\n  Ab CD:\n'
    f = activity.text_features(text)
    assert set(f) == set(activity.FEATURES)
    as_str = {name: "".join(str(int(v)) for v in values) for name, values in f.items()}
    #                             A B _ " x ( y ) " ⏎ _ _ A b _ C D : ⏎
    assert as_str["in_quotes"] == "0001111110000000000"
    assert as_str["in_brackets"] == "0000011100000000000"
    assert as_str["line_start"] == "1000000000100000000"
    assert as_str["upper_run"] == "1100000000000001100"
    assert as_str["whitespace"] == "0010000001110010001"
    assert list(f["line_position"]) == [*range(10), *range(9)]


def test_unbalanced_closing_bracket_does_not_go_negative():
    f = activity.text_features("a)b(c")
    assert list(f["in_brackets"]) == [0, 0, 0, 1, 1]


def test_correlation_of_a_feature_with_constructed_activations():
    rng = np.random.default_rng(0)
    feature = (rng.random(500) < 0.3).astype(float)
    noise = rng.normal(size=500)
    acts = np.stack([2 * feature + 1, -feature, np.full(500, 0.7), noise,
                     feature + noise], axis=1)
    r = activity.correlations(acts, feature)
    np.testing.assert_allclose(r[:3], [1.0, -1.0, 0.0], atol=1e-12)
    for j in (3, 4):
        assert r[j] == pytest.approx(np.corrcoef(acts[:, j], feature)[0, 1], abs=1e-12)


def test_rank_cells_finds_a_planted_cell_in_any_layer_and_signal():
    rng = np.random.default_rng(1)
    N, H = 400, 5
    feature = (rng.random(N) < 0.5).astype(float)
    signals = [[activity.Signal(name, "state", rng.normal(size=(N, H))) for name in "hc"]
               for _ in range(2)]
    signals[1][1].values[:, 3] = -feature + 0.1 * rng.normal(size=N)  # layer 1, c[3]
    ranked = activity.rank_cells(signals, {"planted": feature, "absent": np.zeros(N)}, top=4)
    best = ranked["planted"][0]
    assert (best.layer, best.signal, best.unit) == (1, "c", 3) and best.r < -0.95
    assert len(ranked["planted"]) == 4
    assert abs(ranked["planted"][1].r) < 0.3  # the rest is noise, sorted by |r|
    assert [abs(c.r) for c in ranked["planted"]] == sorted(
        (abs(c.r) for c in ranked["planted"]), reverse=True)
    assert ranked["absent"] == []


def test_saturation_counts_the_fraction_near_each_end():
    gate = np.array([[0.05, 0.5, 0.95], [0.09, 0.5, 0.5], [0.1, 0.91, 0.99], [0.2, 0.9, 0.0]])
    left, right = activity.saturation(gate)
    np.testing.assert_array_equal(left, [0.5, 0.0, 0.25])
    np.testing.assert_array_equal(right, [0.0, 0.25, 0.5])


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 30), st.integers(1, 4)),
              elements=st.floats(-100, 100)))
def test_quantise_round_trip_within_half_a_step(x):
    codes, lo, hi = activity.quantise(x)
    assert codes.dtype == np.uint8 and codes.shape == x.shape
    back = activity.dequantise(codes, lo, hi)
    half_step = (hi - lo) / 510
    assert np.all(np.abs(back - x) <= half_step + 1e-9 * (1 + np.abs(x)))
    np.testing.assert_array_equal(back.min(axis=0), lo)  # the ends are exact
    np.testing.assert_allclose(back.max(axis=0), hi, rtol=1e-12, atol=1e-12)


def test_top_predictions_are_sorted_by_probability():
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    ids, p = activity.top_predictions(probs, k=2)
    np.testing.assert_array_equal(ids, [[1, 2], [0, 2]])
    np.testing.assert_array_equal(p, [[0.6, 0.3], [0.5, 0.3]])
