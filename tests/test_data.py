"""Data: code-point ids, nanoGPT's split, truncated-BPTT windows, evaluation coverage."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charlstm.data import Batches, Cursor, encode, eval_windows, make_corpus, split
from charlstm.errors import UserError
from charlstm.text import Vocab


def test_encode_matches_vocab_encode_on_unicode():
    text = "Héllo, wörld ✓ 𝄞 ok\n" * 3
    vocab = Vocab.from_text(text)
    ids = encode(text, vocab)
    np.testing.assert_array_equal(ids, vocab.encode(text))
    assert vocab.decode(ids) == text
    with pytest.raises(ValueError, match="outside the vocabulary"):
        encode("zzz", vocab)


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=1, max_size=40), st.randoms(use_true_random=False))
def test_encode_matches_vocab_encode_in_any_vocabulary_order(text, rnd):
    """An imported model's vocabulary keeps its file order: encode must not assume sorted."""
    chars = sorted(set(text))
    rnd.shuffle(chars)
    vocab = Vocab(chars)
    np.testing.assert_array_equal(encode(text, vocab), vocab.encode(text))


def test_split_is_nanogpt_shakespeare_char(tinyshakespeare):
    text = tinyshakespeare.read_text(encoding="utf-8")
    corpus = make_corpus(text, 0.1)
    n = len(text)
    # nanoGPT data/shakespeare_char/prepare.py: train = data[:int(n*0.9)], val = rest
    assert len(corpus.train) == int(n * 0.9) == 1_003_854
    assert len(corpus.val) == n - int(n * 0.9) == 111_540
    assert len(corpus.vocab) == 65
    assert corpus.vocab.decode(corpus.val[:5]) == text[int(n * 0.9):][:5]


def test_vocab_covers_val_only_characters_and_val_frac_zero():
    corpus = make_corpus("aaaaaaaabz", 0.2)
    assert corpus.vocab.chars == ["a", "b", "z"]  # from the whole text
    assert corpus.vocab.decode(corpus.val) == "bz"
    train, val = split(np.arange(10), 0.0)
    assert len(train) == 10 and len(val) == 0
    with pytest.raises(UserError, match="validation split .* has 1 character"):
        make_corpus("abcdefghij", 0.1)


def test_windows_continue_each_stream_and_wrap_to_a_new_epoch():
    ids = np.arange(103)  # distinct ids show exactly which character lands where
    B, T = 4, 5
    batches = Batches(ids, B, T)
    S = (103 - 1) // B  # 25 per stream
    assert batches.windows_per_epoch == S // T == 5
    cursor, xs = Cursor(), []
    for _ in range(batches.windows_per_epoch):
        x, y = batches.get(cursor)
        assert x.shape == y.shape == (T, B) and x.flags.c_contiguous
        np.testing.assert_array_equal(y, x + 1)  # targets are the next character
        xs.append(x)
        cursor = batches.advance(cursor)
    assert cursor == Cursor(epoch=1, window=0)
    streams = np.concatenate(xs, axis=0).T  # (B, W*T): each row is one contiguous stream
    for b in range(B):
        np.testing.assert_array_equal(streams[b], np.arange(b * S, b * S + 25))
    np.testing.assert_array_equal(batches.get(cursor)[0], xs[0])  # epoch 2 starts over
    assert batches.epoch_progress(Cursor(1, 2)) == pytest.approx(1.4)


def test_too_short_for_one_batch_says_size_and_flags():
    Batches(np.zeros(2 * 3 + 1, np.int64), 2, 3)  # exactly enough
    with pytest.raises(UserError) as e:
        Batches(np.zeros(2 * 3, np.int64), 2, 3, source="tiny.txt")
    msg = str(e.value)
    assert "tiny.txt" in msg and "2 x 3 + 1 = 7" in msg
    assert "--batch-size" in msg and "--seq-len" in msg and "\n" not in msg


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 200), B=st.integers(1, 9), T=st.integers(1, 12))
def test_eval_windows_cover_every_target_exactly_once(n, B, T):
    ids = np.arange(n)
    pairs = []
    for x, y, mask in eval_windows(ids, B, T):
        assert x.shape == y.shape == mask.shape and x.shape[0] <= T
        pairs += list(zip(x[mask].tolist(), y[mask].tolist()))
    assert sorted(pairs) == [(i, i + 1) for i in range(n - 1)]
