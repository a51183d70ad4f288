"""Sampling: the distribution it draws from, the draw itself, and generation with state."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charlstm import CharLSTM, ModelConfig, engine, fast, pool
from charlstm.errors import UserError
from charlstm.model import zero_state
from charlstm.sample import (
    encode_prime,
    generate,
    generate_ids,
    generate_parallel,
    numpy_step_fn,
    probabilities,
    sample_ids,
    stream_rngs,
)
from charlstm.text import Vocab


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def tiny_model(cell="lstm", V=11, seed=0):
    return CharLSTM(ModelConfig(vocab_size=V, hidden_size=6, num_layers=2, cell=cell),
                    seed=seed, dtype=np.float64)


def test_probabilities_are_softmax_of_logits_over_temperature():
    z = np.random.default_rng(0).normal(size=(3, 9)) * 4
    for temperature in (0.3, 1.0, 2.5):
        np.testing.assert_allclose(probabilities(z, temperature), softmax(z / temperature),
                                   rtol=1e-12)


def test_top_k_keeps_exactly_the_k_largest():
    z = np.random.default_rng(1).normal(size=(4, 10))
    p = probabilities(z, 1.0, top_k=3)
    for row_z, row_p in zip(z, p):
        top = np.argsort(row_z)[-3:]
        assert set(np.flatnonzero(row_p)) == set(top)
        np.testing.assert_allclose(row_p[top], softmax(row_z[top]), rtol=1e-12)
    np.testing.assert_allclose(probabilities(z, 1.0, top_k=10), softmax(z), rtol=1e-12)
    np.testing.assert_allclose(probabilities(z, 1.0, top_k=99), softmax(z), rtol=1e-12)


def test_top_p_keeps_the_smallest_set_reaching_p():
    z = np.log(np.array([[0.05, 0.5, 0.15, 0.3]]))
    assert np.flatnonzero(probabilities(z, 1.0, top_p=0.4)[0]).tolist() == [1]
    np.testing.assert_allclose(probabilities(z, 1.0, top_p=0.75)[0], [0, 0.625, 0, 0.375])
    assert np.flatnonzero(probabilities(z, 1.0, top_p=0.85)[0]).tolist() == [1, 2, 3]
    assert np.count_nonzero(probabilities(z, 1.0, top_p=1.0)) == 4
    assert np.flatnonzero(probabilities(z, 1.0, top_p=1e-9)[0]).tolist() == [1]


def test_top_k_then_top_p_combine():
    z = np.log(np.array([[0.4, 0.3, 0.2, 0.1]]))
    # top-k 3 renormalises to 4/9, 3/9, 2/9; top-p 0.7 then needs the first two.
    np.testing.assert_allclose(probabilities(z, 1.0, top_k=3, top_p=0.7)[0],
                               [4 / 7, 3 / 7, 0, 0], rtol=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e30, 1e30), min_size=1, max_size=12),
       st.floats(1e-300, 1e6), st.none() | st.integers(1, 15), st.floats(1e-6, 1.0))
def test_probabilities_never_fail_on_extreme_values(logits, temperature, top_k, top_p):
    z = np.array([logits], dtype=np.float32).astype(np.float64)
    p = probabilities(z, temperature, top_k, top_p)
    assert np.all(np.isfinite(p)) and np.all(p >= 0)
    assert abs(p.sum() - 1.0) < 1e-12
    full = probabilities(z, temperature)[0]
    assert p[0, full == full.max()].max() > 0  # a most likely character is always possible
    ids = sample_ids(z, temperature, top_k, top_p, stream_rngs(0, 1))
    assert p[0, ids[0]] > 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e30, 1e30), min_size=1, max_size=12),
       st.floats(1e-300, 1e6) | st.just(0.0), st.none() | st.integers(1, 15),
       st.floats(1e-6, 1.0), st.integers(0, 2**32))
def test_compiled_draw_is_sample_ids(logits, temperature, top_k, top_p, seed):
    """fast.stack's draw (the compiled sampling loop's) picks the id sample_ids picks
    from the same logits and the same uniform, on extreme values too."""
    stack = pytest.importorskip("charlstm.fast.stack", reason="numba is not installed")
    z = np.array([logits], dtype=np.float32)
    expected = sample_ids(z, temperature, top_k, top_p, [np.random.default_rng(seed)])[0]
    u = 1.0 - np.random.default_rng(seed).random()
    V = z.shape[1]
    got = stack._draw(z[0], u, temperature,
                      V if top_k is None else min(top_k, V), top_p, np.empty(V), np.empty(V))
    assert got == expected


@pytest.mark.parametrize("logits", [[0.0, np.nan, 1.0], [np.inf, 0.0], [-np.inf, -np.inf],
                                    [2.0, np.nan, np.nan], [-np.inf, 3.0, 3.0]])
def test_compiled_draw_treats_non_finite_logits_as_sample_ids_does(logits):
    stack = pytest.importorskip("charlstm.fast.stack", reason="numba is not installed")
    z = np.array([logits], dtype=np.float32)
    V = z.shape[1]
    u = 1.0 - np.random.default_rng(0).random()  # what sample_ids draws from rng 0
    draw = lambda t: stack._draw(z[0], u, t, V,  # noqa: E731
                                 1.0, np.empty(V), np.empty(V))
    assert draw(0.0) == sample_ids(z, 0.0, None, 1.0, [])[0]  # greedy: NumPy's argmax
    try:
        expected = sample_ids(z, 1.0, None, 1.0, [np.random.default_rng(0)])[0]
    except FloatingPointError:
        with pytest.raises(FloatingPointError, match="non-finite"):
            draw(1.0)
    else:
        assert draw(1.0) == expected


def test_non_finite_logits_are_an_error_not_garbage():
    with pytest.raises(FloatingPointError):
        probabilities(np.array([[0.0, np.nan]]), 1.0)


def test_draws_follow_the_distribution():
    z = np.log(np.array([[0.5, 0.25, 0.0, 0.125, 0.125]]) + 1e-300)
    rng = [np.random.default_rng(3)]
    counts = np.bincount([sample_ids(z, 1.0, None, 1.0, rng)[0] for _ in range(20000)],
                         minlength=5)
    assert counts[2] == 0
    expected = 20000 * np.array([0.5, 0.25, 0.125, 0.125])
    chi2 = (((counts[[0, 1, 3, 4]] - expected) ** 2) / expected).sum()
    assert chi2 < 16.3  # 99.9th percentile of chi-square with 3 degrees of freedom


def test_temperature_zero_is_argmax():
    z = np.random.default_rng(4).normal(size=(5, 8))
    np.testing.assert_array_equal(sample_ids(z, 0.0, None, 1.0, []), z.argmax(axis=1))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_greedy_generation_matches_a_whole_sequence_forward(cell):
    """Step-by-step generation with carried state == one forward over the final text."""
    model = tiny_model(cell)
    vocab = [chr(ord("a") + i) for i in range(11)]
    prime = np.array([3, 1, 4])
    out = [c for (c,) in generate(numpy_step_fn(model.params, model.config),
                                  zero_state(model.config, 1, np.float64), vocab, prime, 20,
                                  temperature=0.0)]
    ids = np.concatenate([prime, [vocab.index(c) for c in out]])
    logits, _ = model.forward(ids[:-1, None])
    # Each generated character is the argmax after everything before it.
    np.testing.assert_array_equal(logits[len(prime) - 1:, 0].argmax(axis=1), ids[len(prime):])


def run_streams(model, B, seed, length=30, **kw):
    vocab = [chr(ord("a") + i) for i in range(model.config.vocab_size)]
    rows = list(generate(numpy_step_fn(model.params, model.config),
                         zero_state(model.config, B, np.float64), vocab, [0], length,
                         rngs=stream_rngs(seed, B), **kw))
    return ["".join(col) for col in zip(*rows)]


def test_same_seed_same_text_and_batch_equals_single_streams():
    model = tiny_model()
    batch = run_streams(model, 3, seed=7, top_k=5)
    assert batch == run_streams(model, 3, seed=7, top_k=5)
    assert len(set(batch)) == 3  # streams are independent
    assert run_streams(model, 1, seed=7, top_k=5) == batch[:1]
    assert run_streams(model, 3, seed=8, top_k=5) != batch


SETTINGS = [dict(), dict(temperature=0.7, top_k=4), dict(temperature=1.4, top_p=0.8),
            dict(temperature=0.9, top_k=6, top_p=0.9), dict(temperature=0.0)]


@pytest.fixture
def spy_slices(monkeypatch):
    """Let tiny batches split (a slice may hold one stream) and record how many slices
    each engine.map_streams call ran."""
    monkeypatch.setattr(engine, "COMPILED_SLICE_STREAMS", 1)
    seen, real = [], engine.map_streams

    def spy(fn, B, H, threads=None, fewest=None):
        seen.append(len(engine.stream_slices(B, H, threads, fewest)))
        return real(fn, B, H, threads, fewest)

    monkeypatch.setattr(engine, "map_streams", spy)
    yield seen
    pool.set_num_threads(None)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_parallel_sampling_gives_the_serial_texts(cell, spy_slices):
    """B = 7 streams over 1, 2 and 3 workers (uneven slices), each worker running the
    whole step loop for its slice: the same ids as all 7 streams stepped together,
    for every sampling setting, and texts that differ from stream to stream."""
    model = tiny_model(cell)
    # a cell offering stack_inference (the fast LSTM with numba) samples in its compiled
    # loop, the others in generate_ids itself
    compiled = engine.compiled_inference(model.params, model.config)
    offer = getattr(fast.implementation(cell), "stack_inference", None)
    dtype = model.params["decoder.weight"].dtype
    assert (compiled is not None) == (offer is not None and offer(dtype) is not None)
    for kw in SETTINGS:
        serial = np.array(list(generate_ids(
            numpy_step_fn(model.params, model.config), zero_state(model.config, 7, np.float64),
            [2, 5], 30, rngs=stream_rngs(3, 7), **kw)))
        for threads in (1, 2, 3):
            ids = generate_parallel(model.params, model.config, [2, 5], 30, stream_rngs(3, 7),
                                    threads=threads, **kw)
            assert ids.dtype == np.int64 and ids.shape == (30, 7)
            np.testing.assert_array_equal(ids, serial, err_msg=f"{kw} on {threads} threads")
        if kw.get("temperature", 1.0) > 0:
            assert len({ids[:, b].tobytes() for b in range(7)}) == 7
    assert spy_slices == [1, 2, 3] * len(SETTINGS)
    pool.set_num_threads(2)  # the default comes from charlstm.set_num_threads / --threads
    generate_parallel(model.params, model.config, [1], 3, stream_rngs(0, 5))
    assert spy_slices[-1] == 2


def test_sampling_splits_only_from_its_own_minimum_per_worker():
    """Sampling splits from its own minimum, COMPILED_SLICE_STREAMS streams per
    worker, whatever the hidden size."""
    n = engine.COMPILED_SLICE_STREAMS
    assert len(engine.stream_slices(2 * n - 1, 512, 2, n)) == 1
    assert len(engine.stream_slices(2 * n, 512, 2, n)) == 2


def test_parallel_sampling_checks_arguments_and_raises_model_errors(spy_slices):
    model = tiny_model()
    assert generate_parallel(model.params, model.config, [0], 0, stream_rngs(0, 4),
                             threads=2).shape == (0, 4)
    for kw in ({"temperature": -1.0}, {"top_k": 0}, {"top_p": 0.0}):
        with pytest.raises(ValueError):
            generate_parallel(model.params, model.config, [0], 5, stream_rngs(0, 4), **kw)
    with pytest.raises(ValueError, match="non-empty"):
        generate_parallel(model.params, model.config, [], 5, stream_rngs(0, 4))
    with pytest.raises(ValueError, match="at least one stream"):
        generate_parallel(model.params, model.config, [0], 5, [])
    broken = dict(model.params, **{"decoder.bias": np.full(11, np.nan)})
    with pytest.raises(FloatingPointError, match="non-finite"):
        generate_parallel(broken, model.config, [0], 5, stream_rngs(0, 4), threads=2)


def test_generate_yields_exactly_length_steps_and_checks_arguments():
    model = tiny_model()
    assert run_streams(model, 2, seed=0, length=0) == []
    assert [len(s) for s in run_streams(model, 2, seed=0, length=5)] == [5, 5]
    for kw in ({"temperature": -1.0}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5}):
        with pytest.raises(ValueError):
            run_streams(model, 1, seed=0, **kw)
    with pytest.raises(ValueError, match="non-empty"):
        list(generate(numpy_step_fn(model.params, model.config),
                      zero_state(model.config, 1), "abcdefghijk", [], 3))


def test_encode_prime_echoes_known_and_lists_or_skips_unknown_characters():
    vocab = Vocab(list("\nabc "))
    ids, echo = encode_prime(vocab, "ab c")
    assert vocab.decode(ids) == "ab c" and echo == "ab c"
    with pytest.raises(UserError, match=r"'x' 'é'.*--unknown skip"):
        encode_prime(vocab, "axébx")
    ids, echo = encode_prime(vocab, "axébx", skip_unknown=True)
    assert echo == "ab"
    # No prime, or nothing left of it: start after a newline, echo nothing.
    for prime in (None, "", "xyz"):
        ids, echo = encode_prime(vocab, prime, skip_unknown=True)
        assert ids.tolist() == [vocab.index["\n"]] and echo == ""
    # Without a newline in the vocabulary: a random character from the seed, echoed.
    vocab = Vocab(list("abcdefgh"))
    starts = {encode_prime(vocab, None, seed=s)[1] for s in range(40)}
    assert len(starts) > 3 and starts <= set("abcdefgh")
    assert encode_prime(vocab, None, seed=5) == encode_prime(vocab, None, seed=5)
